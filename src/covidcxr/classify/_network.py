"""The VGG19 network: backbone (plain or batch-normalised, any width) and classification head.

The backbone is built layer by layer rather than through :func:`keras.applications.VGG19`
so that one builder serves every variant (ImageNet-compatible, batch-normalised, narrow)
and so the whole classifier is one flat functional model: Grad-CAM can reach the last
convolutional layer with ``model.get_layer(name)``. Layer names and order match
``keras.applications.VGG19``, which is what lets ImageNet weight files load into it.

This module imports Keras at import time; the rest of the package imports it lazily.
"""

from __future__ import annotations

from typing import Any, Final

import keras

__all__ = [
    "BLOCK_CONVS",
    "BLOCK_FILTERS",
    "attach_head",
    "backbone_layer_names",
    "block_of_layer",
    "build_backbone",
    "build_head",
    "feature_layer_name",
    "head_model",
    "scaled_filters",
]

#: Convolutions per block in VGG19 (Simonyan and Zisserman, configuration E).
BLOCK_CONVS: Final[tuple[int, ...]] = (2, 2, 4, 4, 4)
#: Filters per block at ``width_multiplier=1``.
BLOCK_FILTERS: Final[tuple[int, ...]] = (64, 128, 256, 512, 512)
# Narrow variants never go below this many filters: fewer starve the first blocks.
_MIN_FILTERS: Final = 8


def scaled_filters(width_multiplier: float) -> tuple[int, ...]:
    """Filters per block for a width multiplier.

    Examples
    --------
    >>> scaled_filters(0.25)
    (16, 32, 64, 128, 128)
    """
    return tuple(max(_MIN_FILTERS, round(f * width_multiplier)) for f in BLOCK_FILTERS)


def feature_layer_name(batch_norm: bool) -> str:
    """The name of the layer whose output is the last convolutional feature map (post-ReLU).

    Examples
    --------
    >>> feature_layer_name(False), feature_layer_name(True)
    ('block5_conv4', 'block5_conv4_relu')
    """
    return "block5_conv4_relu" if batch_norm else "block5_conv4"


def block_of_layer(name: str) -> int | None:
    """The 1-based backbone block a layer belongs to, from its name (``None`` for the head).

    Examples
    --------
    >>> block_of_layer("block3_conv2_bn"), block_of_layer("fc1")
    (3, None)
    """
    if name.startswith("block") and name[5:6].isdigit():
        return int(name[5])
    return None


def backbone_layer_names(batch_norm: bool) -> list[str]:
    """Names of the backbone's layers, in order."""
    names: list[str] = []
    for block, convs in enumerate(BLOCK_CONVS, start=1):
        for conv in range(1, convs + 1):
            base = f"block{block}_conv{conv}"
            names += [base, f"{base}_bn", f"{base}_relu"] if batch_norm else [base]
        names.append(f"block{block}_pool")
    return names


def _backbone(inputs: Any, *, width_multiplier: float, batch_norm: bool, seed: int) -> Any:
    x = inputs
    layer_seed = seed
    for block, (convs, filters) in enumerate(
        zip(BLOCK_CONVS, scaled_filters(width_multiplier), strict=True), start=1
    ):
        for conv in range(1, convs + 1):
            name = f"block{block}_conv{conv}"
            layer_seed += 1
            # He initialisation suits ReLU stacks; Keras's Glorot default shrinks the signal
            # through 16 layers, one reason plain from-scratch VGG19 barely moves.
            initializer = keras.initializers.HeNormal(seed=layer_seed)
            if batch_norm:
                x = keras.layers.Conv2D(
                    filters,
                    3,
                    padding="same",
                    use_bias=False,
                    kernel_initializer=initializer,
                    name=name,
                )(x)
                # Momentum 0.9 (PyTorch's default) rather than Keras's 0.99: the moving
                # statistics used at inference then track the weights within a few dozen
                # steps, so validation is meaningful from the first epochs.
                x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
                x = keras.layers.Activation("relu", name=f"{name}_relu")(x)
            else:
                x = keras.layers.Conv2D(
                    filters,
                    3,
                    padding="same",
                    activation="relu",
                    kernel_initializer=initializer,
                    name=name,
                )(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
    return x


def build_head(
    features: Any, *, n_classes: int, dense_units: int, dropout: float, seed: int
) -> Any:
    """Apply the published head: Dense ReLU, Dropout, softmax (after global average pooling)."""
    x = keras.layers.Dense(
        dense_units,
        activation="relu",
        name="fc1",
        kernel_initializer=keras.initializers.HeNormal(seed=seed + 101),
    )(features)
    x = keras.layers.Dropout(dropout, seed=seed + 102, name="dropout")(x)
    return keras.layers.Dense(
        n_classes,
        activation="softmax",
        name="predictions",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 103),
    )(x)


def build_backbone(
    *,
    input_size: int,
    width_multiplier: float = 1.0,
    batch_norm: bool = False,
    seed: int = 0,
) -> keras.Model:
    """Build the VGG19 convolutional base followed by global average pooling.

    Parameters
    ----------
    input_size
        Side of the square RGB input, at least 32 (five 2x poolings).
    width_multiplier
        Scales every block's filters (1.0 is VGG19).
    batch_norm
        Insert batch normalisation after every convolution (the VGG19-BN variant).
    seed
        Seeds every initialiser, so builds are reproducible.

    Returns
    -------
    keras.Model
        Images ``(n, s, s, 3)`` to pooled features ``(n, filters of block 5)``; its last
        layer is named ``pooled_features``.

    Examples
    --------
    >>> build_backbone(input_size=32, width_multiplier=0.125).output_shape
    (None, 64)
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    conv = _backbone(inputs, width_multiplier=width_multiplier, batch_norm=batch_norm, seed=seed)
    pooled = keras.layers.GlobalAveragePooling2D(name="pooled_features")(conv)
    return keras.Model(inputs, pooled, name="vgg19_backbone")


def attach_head(
    backbone: keras.Model,
    *,
    n_classes: int,
    dense_units: int = 512,
    dropout: float = 0.5,
    seed: int = 0,
) -> keras.Model:
    """The full classifier: ``backbone`` (sharing its layers) followed by the head.

    Examples
    --------
    >>> backbone = build_backbone(input_size=32, width_multiplier=0.125)
    >>> attach_head(backbone, n_classes=3, dense_units=8).output_shape
    (None, 3)
    """
    outputs = build_head(
        backbone.output, n_classes=n_classes, dense_units=dense_units, dropout=dropout, seed=seed
    )
    return keras.Model(backbone.input, outputs, name="vgg19_classifier")


def head_model(model: keras.Model) -> keras.Model:
    """A model from pooled features to probabilities that shares ``model``'s head layers.

    Training it trains the head of ``model``: this is how the frozen recipe trains on
    cached backbone features.
    """
    features = keras.Input(model.get_layer("pooled_features").output.shape[1:], name="features")
    x = model.get_layer("fc1")(features)
    x = model.get_layer("dropout")(x)
    outputs = model.get_layer("predictions")(x)
    return keras.Model(features, outputs, name="vgg19_head")
