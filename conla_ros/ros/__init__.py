"""ROS 2 glue only: message <-> numpy conversions, QoS profiles, interface names, node parameters,
the policy node's message edges, the episode status and diagnostics messages, DDS settings."""
