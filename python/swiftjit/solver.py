"""``swiftjit.Solver``: Caffe's training loop from a solver prototxt."""


def Solver(solver_prototxt):
    """Builds the solver a solver prototxt describes (its ``type:`` picks SGD, Nesterov, AdaGrad,
    RMSProp, AdaDelta or Adam) with its train net and test nets.

    The result is a ``caffe`` solver object: ``solver.step(n)``, ``solver.solve()``,
    ``solver.iter``, ``solver.net`` / ``solver.test_nets`` (nets whose blobs and params are
    NumPy views), ``solver.snapshot()``, ``solver.restore(path)``, ``solver.apply_update()``::

        solver = swiftjit.Solver("lenet_solver.prototxt")
        solver.step(100)
        print(solver.iter, solver.net.blobs["loss"].data)
    """
    from caffe.pycaffe import get_solver
    return get_solver(solver_prototxt)
