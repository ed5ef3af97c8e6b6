"""Benchmark-only ROS 2 nodes and tools: a naive node and a pass-through node to compare the
perception node against, and the end-to-end latency probe. They import rclpy."""
