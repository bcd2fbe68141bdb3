"""Model names, Modelfiles, the on-disk store and pulling."""
