"""The ROS 2 layer: message conversion, nodes and tools. The only place rclpy is imported."""
