"""Meta-World stand-in for the robot: world, data generation and closed-loop evaluation."""
