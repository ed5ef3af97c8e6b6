"""ROS-free rosbag2 tooling: make camera bags with ground truth, run the frame pipeline over a
bag offline, and score recorded outputs.

Reading and writing go through `rosbags` (pure Python), so none of this needs rclpy; replaying
and recording over DDS live in :mod:`endoarss_ros.ros.bags`.
"""
