"""3D-AVS auto-vocabulary: captioners (SMAP + ClipCap, image captioner) -> tags -> vocabulary."""
