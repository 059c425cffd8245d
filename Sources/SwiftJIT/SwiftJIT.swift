// The public library: one import gives the front end (CaffeFormat), the graph IR (Graph) and NumPy I/O.
@_exported import CaffeFormat
@_exported import Graph
@_exported import NumPy
@_exported import Solvers
@_exported import DataPipeline
