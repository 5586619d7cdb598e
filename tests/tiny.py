"""Sizes shared by the end-to-end tests (imported as ``from tiny import ...``)."""

#: A model grid for end-to-end tests: the smallest that xin2019's three blocks accept
#: (22 voxels per axis), ~8 mm voxels over the MNI box.
TINY_GRID = (22, 26, 22)
#: Small channel counts so a training run takes seconds.
TINY_CHANNELS = [8, 16, 32]
