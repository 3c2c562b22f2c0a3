"""segmentation of lidar_ovseg_ros."""
