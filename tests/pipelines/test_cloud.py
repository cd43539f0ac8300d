"""The gs:// path against a local storage emulator, and the Dataflow job graph built offline."""

from __future__ import annotations

import json
import os
import pathlib
import tarfile

import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from model import storage
from model.image.preprocessing import measure_image
from pipelines import report
from pipelines.launch.checks import LaunchError
from pipelines.launch.dependency_lock import RUNTIME_LOCK
from pipelines.launch.model_checks import check_model_export
from tests.conftest import REPO_ROOT
from tests.pipelines.conftest import run_scoring
from tests.pipelines.helpers import assert_review_queue, prediction_rows, read_csv, read_json

STEP_LABELS = {
    "MatchImages",
    "ScoreImages",
    "CollectErrors",
    "ReportProgress",
    "WriteOutputs",
    "ReportScores",
}


@pytest.fixture(scope="module")
def bucket_inputs(gcs_emulator, scoring_inputs, tiny_export):
    """Synthetic tiles, broken files and the export uploaded; a manifest lists the extras."""
    root = f"{gcs_emulator}/scoring"
    storage.upload_dir(str(scoring_inputs.root / "synthetic"), f"{root}/images/synthetic")
    for path in scoring_inputs.broken + scoring_inputs.unlabelled:
        relative = os.path.relpath(path, scoring_inputs.root)
        storage.write_bytes(f"{root}/images/{relative}", pathlib.Path(path).read_bytes())
    manifest_entries = [
        "../images/" + os.path.relpath(path, scoring_inputs.root)
        for path in scoring_inputs.broken + scoring_inputs.unlabelled
    ]
    storage.write_text(
        f"{root}/lists/extra.csv", "image_path\n" + "\n".join(manifest_entries) + "\n"
    )
    storage.upload_dir(tiny_export, f"{root}/model")
    return root


@pytest.mark.slow
def test_gs_inputs_model_and_outputs_share_the_local_code_path(bucket_inputs, scoring_inputs):
    root = bucket_inputs
    output_dir = f"{root}/out"
    run_scoring(
        [
            "--input",
            f"{root}/images/synthetic",  # a gs:// folder, read recursively
            f"{root}/lists/extra.csv",
            "--model_dir",
            f"{root}/model",
            "--output_dir",
            output_dir,
            "--max_error_fraction",
            "1",
            "--tta",
            "4",
        ]
    )
    rows = prediction_rows(output_dir)
    errors = read_csv(f"{output_dir}/errors.csv")
    expected_scored = len(scoring_inputs.labelled) + len(scoring_inputs.unlabelled)
    assert len(rows) == expected_scored and len(errors) == len(scoring_inputs.broken)
    assert all(row["image_path"].startswith(f"{root}/images/") for row in rows + errors)
    assert sum(1 for row in rows if row["true_label"]) == len(scoring_inputs.labelled)

    heatmaps = storage.match(f"{output_dir}/heatmaps/*.jpg")  # the default format
    assert sorted(heatmaps) == sorted(row["heatmap_path"] for row in rows)
    summary = read_json(f"{output_dir}/summary.json")
    assert summary["inputs_matched"] == summary["scored"] + summary["failed"] == len(rows + errors)
    # Test-time views and map peaks from gs:// inputs, as from local ones (test_score checks
    # the values against a direct computation).
    assert summary["tta"] == 4 and any(float(row["p_std"]) > 0 for row in rows)
    assert all(float(row["heatmap_peak"]) >= 0 for row in rows)
    assert summary["empty_heatmaps"] == sum(float(row["heatmap_peak"]) == 0 for row in rows)
    report = read_json(f"{output_dir}/metrics.json")
    assert report["image_level"]["pooled"]["n"] == len(scoring_inputs.labelled)
    # Quality measures are taken of gs:// files too, the same as of their local copies.
    local = {os.path.basename(path): path for path in scoring_inputs.labelled}
    for row in rows:
        if row["true_label"]:
            measures = measure_image(
                pathlib.Path(local[row["image_path"].rsplit("/", 1)[1]]).read_bytes()
            )
            assert float(row["focus_score"]) == measures.focus_score, row["image_path"]
    clean = sum(1 for row in rows if not row["qc_flags"])
    assert summary["quality_control"]["clean_images"] == clean
    assert report["qc_clean"]["counts"]["images"] == sum(
        1 for row in rows if row["true_label"] and not row["qc_flags"]
    )
    plots = ("plots/roc.png", "plots/pr.png", "plots/confusion_matrix.png", "plots/reliability.png")
    for name in ("patients.csv", *plots):
        assert storage.exists(f"{output_dir}/{name}"), name
    assert assert_review_queue(output_dir, limit=1000)["images_needing_review"] > 0


def test_an_unwritable_bucket_is_refused_before_the_job_starts(bucket_inputs):
    with pytest.raises(LaunchError, match="not writable"):
        run_scoring(
            [
                "--input",
                f"{bucket_inputs}/images/synthetic/**",
                "--model_dir",
                f"{bucket_inputs}/model",
                "--output_dir",
                "gs://no-such-bucket/out",
            ]
        )


def _dataflow_flags(root: str) -> list[str]:
    """Flags that build a Dataflow job graph offline (--dry_run=True), staging under root."""
    return [
        "--runner",
        "DataflowRunner",
        "--dry_run=True",
        "--project",
        "demo-project",
        "--region",
        "us-central1",
        "--temp_location",
        f"{root}/tmp",
    ]


def _dataflow_argv(root: str, *extra: str) -> list[str]:
    return [
        "--input",
        f"{root}/images/synthetic/**",
        "--model_dir",
        f"{root}/model",
        "--output_dir",
        f"{root}/dataflow_out",
        *_dataflow_flags(root),
        *extra,
    ]


def _environment(result) -> beam_runner_api_pb2.Environment:
    (environment,) = result.job.proto_pipeline.components.environments.values()
    return environment


def test_dataflow_job_graph_builds_offline_and_stages_the_packages(bucket_inputs, tmp_path):
    result = run_scoring(_dataflow_argv(bucket_inputs, "--setup_file", str(REPO_ROOT / "setup.py")))
    transforms = result.job.proto_pipeline.components.transforms.values()
    top_level = {
        transform.unique_name for transform in transforms if "/" not in transform.unique_name
    }
    assert STEP_LABELS <= top_level

    staged = {}
    for dependency in _environment(result).dependencies:
        name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
            dependency.role_payload
        ).staged_name
        staged[name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(
            dependency.type_payload
        ).path
    assert "workflow.tar.gz" in staged  # the sdist setup.py builds, installed on each worker
    # Workers install the launcher's runtime lock first, so they run its versions.
    assert pathlib.Path(staged["requirements.txt"]).read_bytes() == RUNTIME_LOCK.read_bytes()
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        members = {
            pathlib.PurePosixPath(name).relative_to(*pathlib.PurePosixPath(name).parts[:1])
            for name in sdist.getnames()
            if "/" in name
        }
    for module in (
        "pipelines/score.py",
        "pipelines/scoring/model_handler.py",
        "model/network/gradcam.py",
        "train_job/export/files.py",
    ):
        assert pathlib.PurePosixPath(module) in members, module


GPU_IMAGE = "us-central1-docker.pkg.dev/my-project/my-repo/breakhis-scoring:gpu"
GPU_FLAGS = [
    "--batch_size",
    "128",
    "--sdk_container_image",
    GPU_IMAGE,
    "--sdk_location",
    "container",
    "--experiments",
    "use_runner_v2",
    "--machine_type",
    "n1-standard-8",
    "--max_num_workers",
    "4",
]


@pytest.mark.parametrize(
    ("service_option", "scorer_flags"),
    [
        # The README's GPU commands: one SDK process per vCPU, each with its own model on the
        # shared GPU through NVIDIA MPS; or the processes sharing one model copy.
        (
            "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver;use_nvidia_mps",
            [],
        ),
        (
            "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver",
            ["--model_copies", "1"],
        ),
    ],
)
def test_dataflow_gpu_job_uses_the_custom_container_and_accelerator(
    bucket_inputs, service_option, scorer_flags
):
    result = run_scoring(
        _dataflow_argv(
            bucket_inputs,
            *GPU_FLAGS,
            "--dataflow_service_options",
            service_option,
            *scorer_flags,
        )
    )
    environment = _environment(result)
    payload = beam_runner_api_pb2.DockerPayload.FromString(environment.payload)
    assert payload.container_image == GPU_IMAGE
    staged = [dependency.role_payload for dependency in environment.dependencies]
    assert not any(b"workflow.tar.gz" in name for name in staged)  # the code is in the image
    assert not any(b"requirements.txt" in name for name in staged)  # and the locked packages
    options = result.job.options.get_all_options()
    assert options["dataflow_service_options"] == [service_option]
    # Several SDK processes per VM (Dataflow's default): decoding and overlays use every vCPU.
    assert options["experiments"] is not None and "use_runner_v2" in options["experiments"]
    assert "no_use_multiple_sdk_containers" not in options["experiments"]
    assert (options["machine_type"], options["max_num_workers"]) == ("n1-standard-8", 4)
    # The job's RunInference step carries the scorer's model sharing.
    handler = _run_inference_handler(result)
    assert handler.share_model_across_processes() == bool(scorer_flags)
    assert handler.model_copies() == (int(scorer_flags[1]) if scorer_flags else 1)


def _run_inference_handler(result):
    """The model handler inside the job graph's RunInference step, unpickled as workers do."""
    from apache_beam.internal import pickler

    (transform,) = [
        transform
        for transform in result.job.proto_pipeline.components.transforms.values()
        if transform.unique_name.endswith("/ParDo(_RunInferenceDoFn)")
        and transform.spec.urn == "beam:transform:pardo:v1"
    ]
    payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
    wrapper = pickler.loads(payload.do_fn.payload)[0]  # Beam's exception-handling wrapper
    return wrapper._fn._model_handler


@pytest.mark.slow
def test_a_gs_rerun_needs_overwrite_which_removes_only_the_scorers_files(
    bucket_inputs, scoring_inputs
):
    root = bucket_inputs
    output_dir = f"{root}/rerun"
    model = ["--model_dir", f"{root}/model", "--max_error_fraction", "1"]
    first = ["--input", f"{root}/images/synthetic", "--output_dir", output_dir, *model]
    run_scoring([*first, "--heatmap_format", "png"])
    assert len(storage.match(f"{output_dir}/heatmaps/*.png")) == len(scoring_inputs.labelled)
    user_files = {f"{output_dir}/notes.txt": "mine", f"{output_dir}/heatmaps/mine.png": "mine"}
    for path, text in user_files.items():
        storage.write_text(path, text)

    second = ["--input", f"{root}/lists/extra.csv", "--output_dir", output_dir, *model]
    with pytest.raises(LaunchError, match="earlier run's outputs .* --overwrite"):
        run_scoring(second)
    assert storage.exists(f"{output_dir}/review.csv")
    run_scoring([*second, "--overwrite", "--no_gradcam", "--review_limit", "0"])

    summary = read_json(f"{output_dir}/summary.json")
    rows = prediction_rows(output_dir)
    errors = read_csv(f"{output_dir}/errors.csv")
    assert summary["scored"] == len(rows) == len(scoring_inputs.unlabelled)
    assert summary["failed"] == len(errors) == len(scoring_inputs.broken)
    assert storage.match(f"{output_dir}/heatmaps/*") == [f"{output_dir}/heatmaps/mine.png"]
    for stale in (
        "metrics.json",
        "patients.csv",
        "plots/roc.png",
        "plots/reliability.png",
        "review.csv",
    ):
        assert not storage.exists(f"{output_dir}/{stale}"), stale
    for path, text in user_files.items():
        assert storage.read_text(path) == text
    assert not [path for path in storage.match(f"{output_dir}/**") if "beam-temp-" in path]


def test_a_gs_model_whose_card_disagrees_with_its_model_is_refused(bucket_inputs, tiny_export):
    model_dir = f"{bucket_inputs}/bad_model"
    storage.upload_dir(tiny_export, model_dir)
    card = read_json(f"{model_dir}/model_card.json")
    storage.write_text(f"{model_dir}/model_card.json", json.dumps({**card, "image_size": 64}))
    with pytest.raises(LaunchError, match="image_size 64 but model.keras takes 32 x 32 x 3"):
        check_model_export(model_dir)


@pytest.mark.slow
def test_incremental_gs_runs_score_each_image_once_and_report_from_gs(bucket_inputs):
    root = bucket_inputs
    images = storage.match(f"{root}/images/synthetic/**")
    first = images[::2]
    storage.write_text(f"{root}/lists/first.csv", "image_path\n" + "\n".join(first) + "\n")
    run1, run2, out = f"{root}/inc/run1", f"{root}/inc/run2", f"{root}/inc/report"
    model = ["--model_dir", f"{root}/model"]
    run_scoring(["--input", f"{root}/lists/first.csv", "--output_dir", run1, *model])
    with pytest.raises(LaunchError, match="has no summary.json"):  # a gs:// folder with no run
        run_scoring(
            ["--input", f"{root}/images/synthetic", "--output_dir", run2, *model]
            + ["--skip_scored", f"{root}/inc/no-run"]
        )
    run_scoring(
        ["--input", f"{root}/images/synthetic", "--output_dir", run2, *model]
        + ["--skip_scored", run1]
    )
    first_rows = [row["image_path"] for row in prediction_rows(run1)]
    second_rows = [row["image_path"] for row in prediction_rows(run2)]
    assert sorted(first_rows) == first
    assert sorted(first_rows + second_rows) == images  # each image scored exactly once
    summary = read_json(f"{run2}/summary.json")
    assert (summary["already_scored"], summary["scored"]) == (len(first), len(second_rows))

    argv = ["--predictions", f"{root}/inc/run*/predictions*.csv", "--output_dir", out]
    assert report.main(argv) == 0
    rebuilt = read_json(f"{out}/summary.json")
    assert [run["run_dir"] for run in rebuilt["source_runs"]] == [run1, run2]
    assert rebuilt["scored"] == len(images)
    assert read_json(f"{out}/metrics.json")["image_level"]["pooled"]["n"] == len(images)
    html = storage.read_text(f"{out}/report.html")
    overlays = storage.match(f"{out}/heatmaps/*.jpg")  # the default --heatmap_format
    assert overlays
    for path in overlays:
        name = path.rsplit("/", 1)[1]
        assert f"heatmaps/{name}" in html
        source = [f"{run}/heatmaps/{name}" for run in (run1, run2)]
        assert storage.read_bytes(path) in [
            storage.read_bytes(p) for p in source if storage.exists(p)
        ]

    # The same report's job graph for Dataflow, built offline.
    dataflow = [*argv[:-1], f"{root}/inc/dataflow", *_dataflow_flags(root)]
    result = report.run(dataflow, save_main_session=False)
    transforms = result.job.proto_pipeline.components.transforms.values()
    top_level = {
        transform.unique_name for transform in transforms if "/" not in transform.unique_name
    }
    assert {"ReadPredictions", "ReportScores"} <= top_level
    assert not storage.exists(f"{root}/inc/dataflow/summary.json")
