"""The tutorial-style programs and the flags each is run with when compared against
TensorFlow (flags that switch off randomness neither framework can share: dropout, noise).

``events`` names the folders where a program writes TensorBoard event files; the recorder
stores TensorFlow's tags, steps and values from them and the test compares Kiln's.
Needs only the standard library (the recorder imports it beside TensorFlow).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
GOLDENS = HERE / "goldens"


@dataclass(frozen=True)
class Program:
    name: str
    flags: tuple = ()
    events: tuple = ()  # folders (relative to the run's cwd) holding event files
    blocker: str = ""  # why Kiln cannot run it yet ("" when it runs)
    compiled: bool = True  # also compared on the compiled (LLVM) backend, not only the interpreter
    rtol: float = 2e-3  # relative tolerance of the printed numbers
    atol: float = 1e-5  # absolute tolerance of the printed numbers (accuracy lines: 0.02)
    # scalar tags of summaries over variables that the same run also updates: TF reads the
    # variable while Adam writes it (no dependency orders them; TF's values mix old and new
    # elements), Kiln always before the update; only their steps are compared
    racy_tags: tuple = ()

    @property
    def path(self) -> Path:
        return HERE / f"{self.name}.py"

    @property
    def golden(self) -> Path:
        return GOLDENS / f"{self.name}.json"


PROGRAMS = [
    Program("mnist_softmax"),
    Program("mnist_with_summaries", ("--dropout", "1.0"),
            events=("logs/mnist_with_summaries/train", "logs/mnist_with_summaries/test"),
            racy_tags=("/weights/summaries/", "/biases/summaries/"),
            rtol=5e-3),  # 40 Adam steps in float32: the summation order's drift reaches 2e-3
    Program("mnist_deep", ("--keep_prob", "1.0")),
    Program("linear_regression"),
    Program("nearest_neighbor"),
    Program("multilayer_perceptron"),
    Program("recurrent_network"),
    Program("bidirectional_rnn"),
    Program("dynamic_rnn"),
    Program("autoencoder"),
    Program("variational_autoencoder", ("--noise_stddev", "0")),
    Program("gan"),
    # Adam turns the float noise of gradients that are zero in exact arithmetic (the biases
    # in front of batch norm) into full-size steps, so the two frameworks drift apart from
    # step 2 (with GradientDescent instead, every printed digit agrees)
    Program("dcgan", rtol=0.05, atol=0.005),
    Program("save_restore_model"),
    Program("tensorboard_basic", events=("logs/tensorboard_basic",)),
    Program("cnn_layers_dataset", ("--dropout_rate", "0")),
    Program("control_flow"),
]

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def numbers_and_text(line: str) -> tuple[list[float], str]:
    """The numbers printed on a line, and the line with each number replaced by '#'."""
    return [float(m) for m in NUMBER.findall(line)], NUMBER.sub("#", line)
