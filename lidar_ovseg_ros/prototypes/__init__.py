"""prototypes of lidar_ovseg_ros."""
