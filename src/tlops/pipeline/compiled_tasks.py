"""What the compiled transfer-learning pipeline asks of each step: where its inputs come from, and its settings.

Read from the compiled YAML (the IR), not from :mod:`tlops.pipeline.pipeline`, so that it shows what a cluster
gets: the CPU, memory and GPU of each task (a pipeline parameter shown with its default), its ``/dev/shm``, node
selector, tolerations and retries. :mod:`tlops.pipeline.component_docs` puts them on each component's page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"^\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}$")
_WITH_DEFAULT = re.compile(r" \(default `.*`\)$")


@dataclass(frozen=True)
class TaskUse:
    """A task of the transfer-learning pipeline that runs the component."""

    name: str
    display_name: str
    loop: str  # "" outside a loop, else how the loop repeats the task
    sources: dict[str, str]  # input -> where the pipeline takes it from
    settings: list[tuple[str, str]]  # (what, value): CPU, memory, GPU, /dev/shm, node placement, retries


def shown_value(value: Any, kind: str = "") -> str:
    """A default or constant as the docs show it.

    Python for scalars (an integer kfp stored as a float shown as an integer, an empty string as ``""``), JSON for
    lists and dicts (as a run's parameters are given).
    """
    if kind == "NUMBER_INTEGER" and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, dict | list):
        return f"`{json.dumps(value, sort_keys=True)}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" or value != value.strip() else f"`{value}`"
    return f"`{value!r}`"


def executor_key(container: dict[str, Any]) -> str:
    """What identifies a component's executor in any compiled file: its command and arguments (its code)."""
    return json.dumps([container.get("command"), container.get("args")])


class CompiledPipeline:
    """Reads the compiled pipeline: which tasks run which executor, their inputs' sources and their settings.

    Args:
        spec: The pipeline spec (the YAML's first document).
        platform: The platform spec (its second document: Kubernetes settings), ``{}`` when there is none.
    """

    def __init__(self, spec: dict[str, Any], platform: dict[str, Any]) -> None:
        self.spec = spec
        self.parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        self.kubernetes = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
        self.executors = spec.get("deploymentSpec", {}).get("executors", {})

    def parameter(self, name: str) -> str:
        """A pipeline parameter as the docs show it, with its default when it has one."""
        default = self.parameters.get(name, {})
        if "defaultValue" not in default:
            return f"pipeline parameter `{name}`"
        return f"pipeline parameter `{name}` (default {shown_value(default['defaultValue'], default['parameterType'])})"

    def uses(self) -> dict[str, list[TaskUse]]:
        """Executor (:func:`executor_key`) -> the tasks that run it, inside loops and exit handlers too."""
        found: dict[str, list[TaskUse]] = {}
        for use, executor in self._walk(self.spec["root"]["dag"], None, ""):
            container = self.executors[executor]["container"]
            found.setdefault(executor_key(container), []).append(use)
        return {key: sorted(tasks, key=lambda task: task.name) for key, tasks in found.items()}

    def _walk(self, dag: dict[str, Any], bindings: dict[str, str] | None, loop: str):
        for name, task in sorted(dag.get("tasks", {}).items()):
            component = self.spec["components"][task["componentRef"]["name"]]
            inputs = task.get("inputs", {})
            sources = {
                key: self._source(binding, bindings, dag)
                for kind in ("parameters", "artifacts")
                for key, binding in inputs.get(kind, {}).items()
            }
            if "dag" in component:
                inner = dict(sources)
                iterator = task.get("parameterIterator")
                repeat = loop
                if iterator:
                    over = sources.get(iterator["items"].get("inputParameter", ""), "a list")
                    inner[iterator["itemInput"]] = f"one item of {over}"
                    over = _WITH_DEFAULT.sub("", over)
                    limit = task.get("iteratorPolicy", {}).get("parallelismLimit")
                    repeat = f"once per item of {over}" + (f", at most {limit} at once" if limit else "")
                yield from self._walk(component["dag"], inner, repeat)
                continue
            executor = component["executorLabel"]
            declared = component.get("inputDefinitions", {})
            names = [*declared.get("parameters", {}), *declared.get("artifacts", {})]
            use = TaskUse(
                name=name,
                display_name=task.get("taskInfo", {}).get("name", name),
                loop=loop,
                sources={key: sources[key] for key in names if key in sources},
                settings=self._settings(task, executor, sources, bindings),
            )
            yield use, executor

    def _source(self, binding: dict[str, Any], bindings: dict[str, str] | None, dag: dict[str, Any]) -> str:
        if "componentInputParameter" in binding or "componentInputArtifact" in binding:
            name = binding.get("componentInputParameter") or binding["componentInputArtifact"]
            return self.parameter(name) if bindings is None else bindings.get(name, f"`{name}`")
        if "taskOutputParameter" in binding:
            output = binding["taskOutputParameter"]
            return f"output `{output['outputParameterKey']}` of `{output['producerTask']}`"
        if "taskOutputArtifact" in binding:
            output = binding["taskOutputArtifact"]
            producer, key = output["producerTask"], output["outputArtifactKey"]
            component = self.spec["components"][dag["tasks"][producer]["componentRef"]["name"]]
            selectors = component.get("dag", {}).get("outputs", {}).get("artifacts", {}).get(key)
            if selectors:  # a loop's output: the artifacts of every iteration, gathered
                inner = selectors["artifactSelectors"][0]
                return f"output `{inner['outputArtifactKey']}` of every `{inner['producerSubtask']}` (collected)"
            return f"output `{key}` of `{producer}`"
        if "taskFinalStatus" in binding:
            return f"the final status of `{binding['taskFinalStatus']['producerTask']}` (the tasks it guards)"
        if "runtimeValue" in binding:
            return f"the constant {shown_value(binding['runtimeValue'].get('constant'))}"
        return "`" + json.dumps(binding, sort_keys=True) + "`"

    def _resolve(self, value: Any, sources: dict[str, str]) -> str:
        """A resource value: a constant, or a placeholder for a task input (shown as where that input comes from)."""
        match = _PLACEHOLDER.match(str(value))
        return sources.get(match.group(1), f"`{value}`") if match else shown_value(value)

    def _settings(
        self, task: dict[str, Any], executor: str, sources: dict[str, str], bindings: dict[str, str] | None
    ) -> list[tuple[str, str]]:
        resources = self.executors[executor]["container"].get("resources", {})
        rows = []
        for key, label in (
            ("resourceCpuRequest", "CPU request"),
            ("resourceCpuLimit", "CPU limit"),
            ("resourceMemoryRequest", "memory request"),
            ("resourceMemoryLimit", "memory limit"),
        ):
            if key in resources:
                rows.append((label, self._resolve(resources[key], sources)))
        accelerator = resources.get("accelerator")
        if accelerator:
            count = self._resolve(accelerator.get("resourceCount", "1"), sources)
            kind = self._resolve(accelerator.get("resourceType", ""), sources)
            rows.append(("GPU", f"{count} of {kind}"))
        else:
            rows.append(("GPU", "none"))
        kubernetes = self.kubernetes.get("executors", {}).get(executor, {})
        for mount in kubernetes.get("emptyDirMounts", []):
            if mount.get("mountPath") == "/dev/shm":
                medium = "memory-backed" if mount.get("medium") == "Memory" else "on disk"
                rows.append(("/dev/shm", f"{shown_value(mount.get('sizeLimit', 'unbounded'))}, {medium} (emptyDir)"))
        for key, label in (("nodeSelector", "node selector"), ("tolerations", "tolerations")):
            setting = kubernetes.get(key)
            if setting:
                rows.append((label, self._platform_setting(setting, bindings)))
        retry = task.get("retryPolicy")
        if retry:
            rows.append(
                (
                    "retries",
                    f"{retry.get('maxRetryCount', 0)}, after {retry.get('backoffDuration', '0s')} (x"
                    f"{retry.get('backoffFactor', 1)} each time, at most {retry.get('backoffMaxDuration', '-')})",
                )
            )
        return rows

    def _platform_setting(self, setting: Any, bindings: dict[str, str] | None) -> str:
        """A node selector or tolerations setting: a constant, or a reference to a (pipeline) input."""
        items = setting if isinstance(setting, list) else [setting]
        shown = []
        for item in items:
            reference = next(
                (value for value in item.values() if isinstance(value, dict) and "componentInputParameter" in value),
                None,
            )
            if reference is None:
                shown.append(shown_value(item))
                continue
            name = reference["componentInputParameter"]
            shown.append(self.parameter(name) if bindings is None else bindings.get(name, f"`{name}`"))
        return "; ".join(shown)
