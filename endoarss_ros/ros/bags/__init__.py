"""rosbag2 tooling: make camera bags with ground truth, play and record them over DDS, run the
Predictor over a bag offline, and score recorded outputs.

Reading and writing go through `rosbags` (pure Python), so `make`, `infer` and `eval` run
without rclpy; only `play` and `record` touch DDS.
"""
