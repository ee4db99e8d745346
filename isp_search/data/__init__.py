"""RAW/RGB data: file I/O, data-set formats, pairing, augmentation, synthetic data and the torch Dataset."""
