"""models of lidar_ovseg_ros."""
