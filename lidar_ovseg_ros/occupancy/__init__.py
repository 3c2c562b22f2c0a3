"""occupancy of lidar_ovseg_ros."""
