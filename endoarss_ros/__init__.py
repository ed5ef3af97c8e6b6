"""EndoARSS surgical activity recognition and segmentation for ROS 2.

The subpackages ``model``, ``data``, ``training`` and ``inference`` form a ROS-free core;
only ``ros`` imports rclpy.
"""

__version__ = "0.1.0"
