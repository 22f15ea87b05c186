"""A trained run's `config.yml`, loaded without running code from it, and its pipeline set up.

nerfstudio writes `config.yml` with PyYAML's Python tags and reads it back with
`yaml.Loader`, which builds any object the file names: `!!python/object/apply:os.system`
in a downloaded run folder runs a command as soon as it is loaded. `RunConfigLoader` builds
only what a run's config is made of: config dataclasses, enums and class references (and
nerfstudio's collate functions) from
nerfstudio, spars-ns, gsplat and torch.optim, paths, and the generic alias `Datamanager[Dataset]`;
anything else is refused with the tag it found. `setup_run` is nerfstudio's `eval_setup` on
a config loaded that way (eval_setup reads the file itself, with `yaml.Loader`).
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import pathlib
from pathlib import Path
from typing import Literal

import yaml

from spars_ns.errors import InputError

TRUSTED_PACKAGES = ("nerfstudio", "spars_ns", "gsplat", "torch.optim")
COLLATE_MODULES = "nerfstudio.data.utils."  # the functions a stock config names (collate_fn)
PATH_CLASSES = (pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath, pathlib.PureWindowsPath)


class UnsafeTag(yaml.YAMLError):
    pass


class RunConfigLoader(yaml.Loader):
    """yaml.Loader restricted to the objects a nerfstudio run config holds."""

    def find_python_module(self, name, mark):
        raise UnsafeTag(f"a module ({name}, line {mark.line + 1})")

    def find_python_name(self, name, mark):
        module = name.rpartition(".")[0]
        if name == "_operator.getitem":
            return operator.getitem
        if name in {f"pathlib.{cls.__name__}" for cls in PATH_CLASSES}:
            return getattr(pathlib, name.rpartition(".")[2])
        if not any(module == p or module.startswith(p + ".") for p in TRUSTED_PACKAGES):
            raise UnsafeTag(f"{name} (line {mark.line + 1}), not a class of {', '.join(TRUSTED_PACKAGES)}")
        found = super().find_python_name(name, mark)
        if not isinstance(found, type) and not module.startswith(COLLATE_MODULES):
            raise UnsafeTag(f"{name} (line {mark.line + 1}), not a class")
        return found

    def make_python_instance(self, suffix, node, args=None, kwds=None, newobj=False):
        called = self.find_python_name(suffix, node.start_mark)
        # Called with arguments (python/object/apply): only what has no effect beyond its value.
        harmless = (
            called is operator.getitem
            or called in PATH_CLASSES
            or (isinstance(called, type) and (issubclass(called, enum.Enum) or dataclasses.is_dataclass(called)))
        )
        if not newobj and not harmless:
            raise UnsafeTag(f"a call of {suffix} (line {node.start_mark.line + 1}), which is not part of a run config")
        return super().make_python_instance(suffix, node, args, kwds, newobj)


def load_run_config(config_path: Path):
    """The TrainerConfig of a run, or an InputError naming the file and what it holds that a config does not."""
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.engine.trainer import TrainerConfig

    if not config_path.is_file():
        raise InputError(f"{config_path}: no such run config (the config.yml that ns-train wrote)")
    try:
        config = yaml.load(config_path.read_text(), Loader=RunConfigLoader)
    except UnsafeTag as err:
        raise InputError(
            f"{config_path}: refused, it names {err}. A run config from someone else must not run code."
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError, TypeError, ValueError, AttributeError) as err:
        raise InputError(
            f"{config_path}: not a run config that can be read ({type(err).__name__}: {str(err)[:200]})"
        ) from None
    if not isinstance(config, TrainerConfig):
        raise InputError(
            f"{config_path}: not a run config (it holds a {type(config).__name__}, not nerfstudio's TrainerConfig)"
        )
    if config.method_name not in all_methods:
        raise InputError(f"{config_path}: a {config.method_name} run, a method that is not installed here")
    return config


def setup_run(config, test_mode: Literal["test", "val", "inference"] = "test"):
    """The pipeline of a run from its config (`load_run_config`), its latest checkpoint loaded, as `eval_setup` does."""
    import torch
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.utils.eval_utils import eval_load_checkpoint

    config.pipeline.datamanager._target = all_methods[config.method_name].pipeline.datamanager._target
    config.load_dir = config.get_checkpoint_dir()
    pipeline = config.pipeline.setup(
        device=torch.device("cuda" if torch.cuda.is_available() else "cpu"), test_mode=test_mode
    )
    pipeline.eval()
    eval_load_checkpoint(config, pipeline)  # torch.load with torch's default weights_only=True (torch >= 2.6)
    return pipeline
