"""The torch-free `conla bench` commands: `sim` (frames per second, bytes per episode), `ros` (image
transport over loopback, `loopback`) and `node` (policy_node under a camera stream).

The benches that need torch (`conla bench lam`, `conla bench policy`) live with the training commands.
"""
