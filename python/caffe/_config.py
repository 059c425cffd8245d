"""The process-wide settings pycaffe keeps globally (caffe.set_random_seed, caffe.set_mode_*).

pycaffe's API is built on global state (Caffe::Get()); this module is the one place we keep it,
and it only holds values read when the next Net or Solver is created.
"""

seed = None      # None: the runtime's default seed (1)
threads = None   # None: the runtime's default (one per core)
device = 0
