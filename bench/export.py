"""Size, CPU latency and test accuracy of the trained classifier as torch fp32, ONNX fp32 and int8 (static, dynamic).

Usage (run by hand; a few minutes on 2 busy CPU cores)::

    OMP_NUM_THREADS=2 .venv/bin/python bench/export.py --workdir /tmp/tlops-bench-export \
        --json /tmp/tlops-bench-export/export.json

The data: scikit-learn's handwritten digits (bundled, no download) as a 10-class ImageFolder, ``--per-class``
images a class, split by tlops. The model: the bundled ``efficientnet_lite0`` at ``--image-size`` pixels, trained by
the ``--strategy`` (default ``partial``, ``--epochs``) from its linear probe, calibrated by the evaluate step. Then
the same functions the register step's export calls: ONNX export, int8 quantisation (static: calibrated on 256
training images; dynamic), the test accuracy of each with the paired-bootstrap verdict of the export gate at
``--margin``, and size and median latency at batch 1 and 32 on ``--threads`` threads (no MLflow: nothing registered).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from tlops.data.demo import write_digits_imagefolder
from tlops.data.loading import make_loader, split_dataset
from tlops.data.prepare import prepare_data
from tlops.data.preprocessing import eval_transform
from tlops.evaluation.calibration import softmax
from tlops.evaluation.metrics import predict_logits
from tlops.promotion.export_gate import export_verdict
from tlops.serving.export_latency import measure
from tlops.serving.onnx_export import export_onnx, onnx_logits, onnx_session, quantize_int8
from tlops.steps.encoders import prepared_manifest
from tlops.steps.evaluate import evaluate
from tlops.steps.export import calibration_batches, exported_test_logits
from tlops.steps.extract_features import extract_and_probe
from tlops.steps.fine_tune import fine_tune
from tlops.steps.outputs import Evaluation, load_model
from tlops.steps.runtime import Runtime
from tlops.train.config import TrainConfig


def main() -> None:
    """Train, export, quantise, measure; print a Markdown table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tlops-bench-export"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--strategy", default="partial")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--margin", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    work = args.workdir
    runtime = Runtime(cache_dir=work / "cache", batch_size=32)
    dirs = {name: work / name for name in ("data", "features", "probe", "model", "evaluation")}
    prepare_data(str(write_digits_imagefolder(work / "digits", per_class=args.per_class)), dirs["data"])
    extract_and_probe(
        dirs["data"], "efficientnet_lite0", dirs["features"], dirs["probe"], runtime, image_size=args.image_size
    )
    fine_tune(
        dirs["data"], dirs["probe"], dirs["model"], TrainConfig(strategy=args.strategy, epochs=args.epochs), runtime
    )
    evaluate(dirs["data"], dirs["model"], dirs["evaluation"], runtime, tracking_uri=f"sqlite:///{work}/mlflow.db")

    model, config = load_model(dirs["model"])
    model.eval()
    temperature = float(Evaluation.read(dirs["evaluation"]).calibration.get("temperature", 1.0))
    manifest, classes, _ = prepared_manifest(dirs["data"], runtime)
    transform = eval_transform(config.preprocessing)
    test = make_loader(split_dataset(manifest, "test", classes, transform), 32)
    fp32_logits, targets = predict_logits(model, test, torch.device("cpu"))
    fp32 = softmax(fp32_logits, temperature)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        graphs = {"onnx": export_onnx(model, args.image_size, Path(scratch) / "fp32.onnx")}
        calibration = calibration_batches(manifest, classes, transform, 256, 0, runtime)
        graphs["int8-static"] = quantize_int8(graphs["onnx"], Path(scratch) / "s.onnx", "static", calibration)
        graphs["int8-dynamic"] = quantize_int8(graphs["onnx"], Path(scratch) / "d.onnx", "dynamic")
        timing = {row["format"]: row for row in measure(model, graphs, args.image_size, args.threads, args.repeats)}
        rows.append(timing["torch"] | {"test_accuracy": float((fp32.argmax(1) == targets).mean())})
        for name, path in graphs.items():
            logits = exported_test_logits(onnx_session(path, args.threads), test, onnx_logits)
            verdict = export_verdict(softmax(logits, temperature), fp32, targets, classes, args.margin)
            rows.append(timing[name] | {"test_accuracy": verdict.exported_accuracy, "verdict": verdict.to_dict()})
    print(f"{len(targets)} test images, margin {args.margin}, {args.threads} threads, {args.image_size} px\n")
    print("| model | size MB | batch 1 ms | batch 32 ms | test acc. | diff. (95% CI) | gate |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        verdict = row.get("verdict")
        gate = "" if verdict is None else ("accept" if verdict["accepted"] else "refuse")
        ci = (
            ""
            if verdict is None
            else f"{verdict['difference']:+.3f} [{verdict['ci_low']:+.3f}, {verdict['ci_high']:+.3f}]"
        )
        print(
            f"| {row['format']} | {row['size_mb']:.1f} | {row['latency_ms_batch1']:.1f} | "
            f"{row['latency_ms_batch32']:.0f} | {row['test_accuracy']:.3f} | {ci} | {gate} |"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
