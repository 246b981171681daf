"""The shape every training method takes: a module whose forward computes named losses.

A method owns the student and whatever else it trains (an FFB, a peer, a shadow head). Its
`forward(x, y, epoch)` returns the student's logits and a dict of named losses; the engine sums
them, steps one optimizer per parameter group, and logs each name. A frozen teacher is kept out
of the module tree so it is neither saved with the method nor wrapped by DDP.

A method also describes itself, so nothing outside `distillers/` needs its name: a display
`label`, the extra networks it trains or exposes (`heads`, each built by `extra_network`), the
epochs worth marking on a learning curve (`schedule_marks`), a check of a teacher/student pair
against its config (`check_pair`), and whether it needs the teacher's weights or only its
architecture (`needs_teacher_weights`), and the claims its paper makes (`claims`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from sdkd_core.claims import Claim
from sdkd_core.config import MethodConfig
from sdkd_core.errors import UserError
from sdkd_core.models import StagedNet
from sdkd_core.tasks import CAPABILITIES, Task, get_task


class NoConfig(MethodConfig):
    pass


class Distiller(nn.Module, ABC):
    name = "base"  # the registry key, also the prefix of its settings (`kd.temperature`)
    label = ""  # how tables, plots and reports name it: "KD", "SDKD"
    Config: type[MethodConfig] = NoConfig
    needs_teacher = True  # a teacher network must be passed in
    needs_teacher_weights = True  # ... pretrained (False: only its architecture is used)
    # Extra networks besides the student, key -> display name. Each key's accuracy is logged as
    # `test_acc_<key>` (see `eval_logits`) and `extra_network(key)` builds it for Grad-CAM.
    heads: ClassVar[dict[str, str]] = {}
    # Its paper's claims (`sdkd_core.claims`), which the report tests on every run.
    claims: ClassVar[tuple[Claim, ...]] = ()
    # What else a training batch must carry, passed to `forward` as keyword arguments: names
    # from `sdkd_core.loader.BATCH_INPUTS` ("index": each image's position in the training
    # set, for a memory bank; "strong_view": a strongly augmented copy of each image).
    batch_inputs: ClassVar[tuple[str, ...]] = ()
    # What the task's outputs must support (`sdkd_core.tasks.CAPABILITIES`). A method written
    # with `self.task`'s losses needs nothing; the default is a classifier's logits.
    requires: ClassVar[frozenset[str]] = frozenset({"image_logits"})

    # The task whose losses the method trains with; `build_distiller` sets it after checking
    # `check_task` (a class default, so a researcher's __init__ keeps its three arguments).
    task: Task = get_task("classification")

    def __init__(self, student: StagedNet, teacher: StagedNet | None = None,
                 config: MethodConfig | None = None):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise UserError(f"method '{self.name}' needs a teacher")
        self.student = student
        self.config = config if config is not None else self.Config()
        self._frozen: list[StagedNet] = []
        if teacher is not None:
            self.check_pair(self.config, teacher, student)
            teacher.eval().requires_grad_(False)
            self._frozen.append(teacher)

    @property
    def teacher(self) -> StagedNet | None:
        return self._frozen[0] if self._frozen else None

    def _apply(self, fn, recurse=True):  # keep the unregistered teacher on the same device
        for frozen in self._frozen:
            frozen._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        super().train(mode)
        for frozen in self._frozen:
            frozen.eval()  # a teacher never updates its BatchNorm statistics
        return self

    def teacher_output(self, x: Tensor, preact: bool = False):
        """The frozen teacher's pass, without autograd; `preact` as in `StagedNet.forward`."""
        with torch.no_grad():
            return self.teacher(x, preact=True) if preact else self.teacher(x)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimizer; each group gets its own optimizer and schedule."""
        return {"student": list(self.student.parameters())}

    def bind_data(self, train_labels: Tensor) -> None:
        """Called by the engine before training (and before a checkpoint is loaded) with the
        labels of the training images (in `index` order), for state sized or drawn by the
        data: a memory bank, negatives of other classes."""

    def begin_epoch(self, epoch: int, epochs: int, steps_per_epoch: int = 1) -> None:
        """Called before each training epoch (0-based) with the run's length."""

    def epoch_metrics(self) -> dict[str, float]:
        """Extra per-epoch numbers to log (e.g. SDKD's k)."""
        return {}

    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        """Logits to score on the test set: the student, plus each of `heads` by key."""
        logits = {"student": self.student(x).logits}
        logits.update({key: output_logits(self.extra_network(key)(x)) for key in self.heads})
        return logits

    def extra_network(self, key: str) -> nn.Module:
        """Head `key` of `heads` as a network of its own: images in, logits (or a
        `ModelOutput`) out, built from the method's current state. Its `cam_layer` attribute
        (default: the last stage) is where Grad-CAM looks. It may share weights with the method:
        copy it before changing it."""
        raise NotImplementedError(f"{type(self).__name__} declares head '{key}' but does not "
                                  "build it in extra_network")

    @classmethod
    def check_task(cls, config: MethodConfig, task: Task) -> None:
        """Raise UserError when the method (with `config`) makes no sense for `task`: by
        default when the task's outputs lack a capability in `requires`."""
        missing = sorted(cls.requires - task.provides)
        if missing:
            raise UserError(f"method '{cls.name}' cannot run on {task.label}: it needs "
                            f"{CAPABILITIES[missing[0]]}, which {task.label} outputs do not "
                            f"have; leave {cls.name} out of this study's methods")

    @classmethod
    def check_pair(cls, config: MethodConfig, teacher: StagedNet, student: StagedNet) -> None:
        """Raise UserError when `config` cannot distil `teacher` into `student` (checked
        before anything trains)."""

    @classmethod
    def schedule_marks(cls, config: MethodConfig, epochs: int) -> dict[str, float]:
        """Epochs (from 0, fractional) worth marking on a learning curve, by display name."""
        return {}

    @classmethod
    def first_epoch_configured(cls, config: MethodConfig, epochs: int) -> int:
        """The first epoch (from 0) whose training `config` can change: before it, students
        of every configuration of this method (same seed) are the same network. A search must
        not rank configurations earlier. Most methods: the first epoch."""
        return 0

    @abstractmethod
    def forward(self, x: Tensor, y: Tensor, epoch: int, **inputs: Tensor
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's logits and the named losses for one training batch; `inputs` holds
        the `batch_inputs` the method asked for."""


def output_logits(output) -> Tensor:
    """The logits of a network's output: a `ModelOutput` or the logits themselves."""
    return output.logits if hasattr(output, "logits") else output


def cam_layer(network: nn.Module) -> nn.Module:
    """Where Grad-CAM looks in a network: its `cam_layer`, else its last stage."""
    layer = getattr(network, "cam_layer", None)
    return layer if layer is not None else network.stages[-1]


def teacher_stage(j: int, student: StagedNet, teacher: StagedNet) -> int:
    """The teacher stage matching student stage j, by relative depth (equal when counts match)."""
    return round(j * teacher.num_stages / student.num_stages)
