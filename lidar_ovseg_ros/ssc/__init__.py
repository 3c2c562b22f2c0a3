"""Stereo semantic scene completion (VLScene): stereo inputs, class matching, the predictor.

ROS-free; `nodes/camera_ssc_node.py` is the thin adapter.
"""
