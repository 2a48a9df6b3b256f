"""The frame path without rclpy: message fields -> frames (:mod:`.conversions`),
approximate-time synchronisation and stamp checks (:mod:`.sync`), and the one frame-stream
routine the live node, the offline replay, the live check and the benchmark share
(:mod:`.frames`). Reads message *fields* only, so rclpy messages and rosbags dataclasses
both work; nothing here imports rclpy."""
