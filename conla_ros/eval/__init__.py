"""`conla eval sim` and `conla eval ros`: closed-loop success on held-out seeds, in Python and through ROS 2.

`sim` runs a policy against the simulated world in this process; `ros` runs the model in
policy_node against sim_arm_node, as separate processes (`node_processes`). Both give an
`report.EvalReport` and can write a `video.RolloutVideo`; `compare` sets saved reports side by side
(a per-task table and paired sign tests).
"""
