"""Running experiments: simulation backends (in-process or Flower's Ray engine) and run outputs."""
