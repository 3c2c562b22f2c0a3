"""nodes of lidar_ovseg_ros."""
