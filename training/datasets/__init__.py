"""Data sets: frame pairs from videos and rosbag2 episodes (video_pairs)."""
