"""tf.data for TF1 graphs: datasets run on the host (Python/numpy), iterators feed the Session.

``dataset.py`` (the user-facing ``tf.data.Dataset``), ``sources.py`` and ``transforms.py``
(the pipeline nodes that produce elements), ``functions.py`` (``map``/``filter`` functions
traced into graph ops and run by Kiln's interpreter), ``iterators.py`` (iterators, whose
``get_next()`` tensors the Session fills through ``compiler/frontend/host_ops.py``),
``structure.py`` (nesting and TensorSpec).  See docs/data.md.
"""
