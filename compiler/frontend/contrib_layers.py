"""tf.contrib.layers: flatten, fully_connected, conv2d, batch_norm (TF1 semantics).

As in TF1, these are the tf.layers classes under the contrib names: the variables are
``<scope>/weights`` and ``<scope>/biases`` (scopes ``fully_connected``, ``Conv``,
``BatchNorm``), they are also model variables (``tf.GraphKeys.MODEL_VARIABLES`` and any
``variables_collections``), the activation comes after the optional ``normalizer_fn``
(which replaces the bias), and the defaults differ from tf.layers: ``activation_fn`` is
relu, weights use xavier (glorot uniform) and conv2d pads 'SAME'.
"""
from __future__ import annotations

from . import initializers as inits
from . import variables as vs
from .convert import convert_to_tensor
from .graph import GraphKeys, get_default_graph
from .layers import Dense, flatten as _flatten
from .layers_conv import Conv2D
from .layers_norm import BatchNormalization
from .ops.math_ops import relu


class _ContribNames:
    """Mixin: TF1 contrib variable names and collections over a tf.layers class."""

    _RENAME = {"kernel": "weights", "bias": "biases"}
    variables_collections = None

    def add_weight(self, name, shape, **kwargs):
        var = super().add_weight(self._RENAME.get(name, name), shape, **kwargs)
        graph = get_default_graph()
        for key in [GraphKeys.MODEL_VARIABLES] + list(self.variables_collections or []):
            if var not in graph.get_collection(key):
                graph.add_to_collection(key, var)
        return var


class _FullyConnected(_ContribNames, Dense):
    pass


class _Conv(_ContribNames, Conv2D):
    pass


class _BatchNorm(_ContribNames, BatchNormalization):
    def unbiased_moving_variance(self, rank) -> bool:
        """contrib's batch_norm runs TF's fused kernel for inputs of rank 2 and 4."""
        return rank in (2, 4) and self.fused_arg is not False


def _finish(outputs, normalizer_fn, normalizer_params, activation_fn, outputs_collections):
    """normalizer_fn (instead of a bias), activation, outputs_collections: contrib's common tail."""
    if normalizer_fn is not None:
        outputs = normalizer_fn(outputs, **(normalizer_params or {}))
    if activation_fn is not None:
        outputs = activation_fn(outputs)
    get_default_graph().add_to_collections(outputs_collections or [], outputs)
    return outputs


def _run_layer(cls, default_scope, scope, reuse, variables_collections, inputs, tail, **kwargs):
    """Build ``cls`` in ``variable_scope(scope, default_scope)``, call it on ``inputs`` and apply
    the contrib tail ``(normalizer_fn, normalizer_params, activation_fn, outputs_collections)``
    inside the same scope (so a normalizer's variables are ``<scope>/BatchNorm/...``)."""
    with vs.variable_scope(scope, default_name=default_scope, reuse=reuse) as sc:
        layer = cls(name=sc.name, _scope=sc, _reuse=reuse, **kwargs)
        layer.variables_collections = variables_collections
        return _finish(layer(convert_to_tensor(inputs)), *tail)


def fully_connected(inputs, num_outputs, activation_fn=relu, normalizer_fn=None, normalizer_params=None,
                    weights_initializer=None, weights_regularizer=None, biases_initializer=inits.Zeros(),
                    biases_regularizer=None, reuse=None, variables_collections=None, outputs_collections=None,
                    trainable=True, scope=None):
    """tf.contrib.layers.fully_connected: ``activation_fn(normalizer_fn(x @ weights) or x @ weights + biases)``."""
    tail = (normalizer_fn, normalizer_params, activation_fn, outputs_collections)
    return _run_layer(_FullyConnected, "fully_connected", scope, reuse, variables_collections, inputs, tail,
                      units=num_outputs, use_bias=normalizer_fn is None and biases_initializer is not None,
                      kernel_initializer=weights_initializer, bias_initializer=biases_initializer,
                      kernel_regularizer=weights_regularizer, bias_regularizer=biases_regularizer,
                      trainable=trainable)


def conv2d(inputs, num_outputs, kernel_size, stride=1, padding="SAME", data_format=None, rate=1,
           activation_fn=relu, normalizer_fn=None, normalizer_params=None, weights_initializer=None,
           weights_regularizer=None, biases_initializer=inits.Zeros(), biases_regularizer=None, reuse=None,
           variables_collections=None, outputs_collections=None, trainable=True, scope=None):
    """tf.contrib.layers.conv2d (NHWC): weights [kh, kw, in, num_outputs], padding 'SAME' by default."""
    if data_format not in (None, "NHWC"):
        raise ValueError(f"contrib.layers.conv2d: Kiln supports data_format NHWC only, got {data_format!r}")
    tail = (normalizer_fn, normalizer_params, activation_fn, outputs_collections)
    return _run_layer(_Conv, "Conv", scope, reuse, variables_collections, inputs, tail,
                      filters=num_outputs, kernel_size=kernel_size, strides=stride, padding=padding,
                      dilation_rate=rate, use_bias=normalizer_fn is None and biases_initializer is not None,
                      kernel_initializer=weights_initializer, bias_initializer=biases_initializer,
                      kernel_regularizer=weights_regularizer, bias_regularizer=biases_regularizer,
                      trainable=trainable)


def batch_norm(inputs, decay=0.999, center=True, scale=False, epsilon=0.001, activation_fn=None,
               param_initializers=None, param_regularizers=None, updates_collections=GraphKeys.UPDATE_OPS,
               is_training=True, reuse=None, variables_collections=None, outputs_collections=None, trainable=True,
               batch_weights=None, fused=None, data_format="NHWC", zero_debias_moving_mean=False, scope=None,
               renorm=False, renorm_clipping=None, renorm_decay=0.99, adjustment=None):
    """tf.contrib.layers.batch_norm: the BatchNormalization layer over the last axis, scope 'BatchNorm'.

    ``updates_collections=None`` runs the moving-average updates with the output (it then
    depends on them); otherwise they go into ``updates_collections``.
    """
    if batch_weights is not None or zero_debias_moving_mean:
        raise NotImplementedError("contrib.layers.batch_norm: batch_weights and zero_debias_moving_mean are "
                                  "not supported by Kiln")
    if data_format != "NHWC":
        raise ValueError(f"contrib.layers.batch_norm: Kiln supports data_format NHWC only, got {data_format!r}")
    init, reg = dict(param_initializers or {}), dict(param_regularizers or {})
    defaults = {"beta": inits.Zeros(), "gamma": inits.Ones(), "moving_mean": inits.Zeros(),
                "moving_variance": inits.Ones()}
    with vs.variable_scope(scope, default_name="BatchNorm", reuse=reuse) as sc:
        layer = _BatchNorm(axis=-1, momentum=decay, epsilon=epsilon, center=center, scale=scale,
                           beta_initializer=init.get("beta", defaults["beta"]),
                           gamma_initializer=init.get("gamma", defaults["gamma"]),
                           moving_mean_initializer=init.get("moving_mean", defaults["moving_mean"]),
                           moving_variance_initializer=init.get("moving_variance", defaults["moving_variance"]),
                           beta_regularizer=reg.get("beta"), gamma_regularizer=reg.get("gamma"), renorm=renorm,
                           fused=fused, trainable=trainable, adjustment=adjustment,
                           name=sc.name, _scope=sc, _reuse=reuse)
        layer.variables_collections = variables_collections
        layer.updates_collections = [updates_collections] if isinstance(updates_collections, str) else \
            list(updates_collections or [])
        outputs = layer(convert_to_tensor(inputs), training=is_training)
        if updates_collections is None and layer.updates:
            from .core_api import identity

            with get_default_graph().control_dependencies(layer.updates):
                outputs = identity(outputs)
    return _finish(outputs, None, None, activation_fn, outputs_collections)


def flatten(inputs, outputs_collections=None, scope=None):
    """tf.contrib.layers.flatten: [batch, ...] -> [batch, k]."""
    with get_default_graph().name_scope(scope or "Flatten"):
        outputs = _flatten(convert_to_tensor(inputs))
    get_default_graph().add_to_collections(outputs_collections or [], outputs)
    return outputs


TF_API = {"tf.contrib.layers": {"fully_connected": fully_connected, "conv2d": conv2d, "convolution2d": conv2d,
                                "batch_norm": batch_norm, "flatten": flatten}}
