"""The JSON API of ``brainmaps serve``: every endpoint, every bad input, auth and the queue."""

from __future__ import annotations

import gzip
import io
import threading
import time
import warnings
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette 1.x: "use httpx2"; httpx still works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from brainmaps.serve.app import ServeSettings, create_app
from brainmaps.serve.engine import Engine
from brainmaps.serve.uploads import UploadLimits
from brainmaps.training.ensembles import predict_run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

METHODS = ["gradient", "hires_cam"]


def scan_of(cohort: Path, subject: str = "sub-0001") -> Path:
    return cohort / subject / "anat" / f"{subject}_T1w.nii.gz"


def patient_scan(cohort: Path) -> Path:
    import pandas as pd

    table = pd.read_csv(cohort / "participants.tsv", sep="\t", dtype=str)
    subject = table.loc[table["group"] == "patient", "participant_id"].iloc[0]
    return scan_of(cohort, subject)


def wait(client: TestClient, job_id: str, timeout: float = 120.0, headers=None) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        status = client.get(f"/jobs/{job_id}", headers=headers).json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s: {status}")


def upload(client: TestClient, name: str, content: bytes, space: str = "auto", headers=None):
    return client.post(
        f"/predict?space={space}",
        files={"file": (name, content, "application/octet-stream")},
        headers=headers,
    )


@pytest.fixture(scope="module")
def engine(tiny_run):
    return Engine(tiny_run, methods=METHODS)


@pytest.fixture(scope="module")
def client(engine, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_jobs")
    app = create_app(engine, ServeSettings(root=root / "jobs", max_queued=8))
    with TestClient(app) as c:
        yield c


def nifti_bytes(data: np.ndarray, affine=None, gz: bool = True) -> bytes:
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    raw = img.to_bytes()
    return gzip.compress(raw) if gz else raw


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return buf.getvalue()


# -- the happy path ------------------------------------------------------------------------
def test_health_describes_the_model(client, tiny_run):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["model"]["classes"] == ["control", "patient"]
    assert body["model"]["n_models"] == 3
    assert body["model"]["methods"] == METHODS
    assert body["auth"] is False


def test_prediction_equals_brainmaps_predict(client, tiny_run, tiny_cohort):
    path = patient_scan(tiny_cohort)
    r = upload(client, path.name, path.read_bytes())
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/jobs/{r.json()['id']}"
    job = r.json()["id"]
    status = wait(client, job)
    assert status["status"] == "done" and status["progress"] == 1.0
    result = client.get(f"/jobs/{job}/result").json()["results"][0]
    expected = predict_run(tiny_run, [path]).iloc[0]
    for name in ("control", "patient"):
        assert result["probabilities"][name] == pytest.approx(expected[f"p_{name}"], abs=1e-6)
    assert result["call"] == expected["predicted"]
    assert result["space"] == "mni" and result["template_correlation"] > 0.35
    members = np.asarray(result["members"])
    assert members.shape == (3, 2)
    assert np.allclose(
        members.mean(axis=0), [result["probabilities"][c] for c in ("control", "patient")]
    )
    assert result["spread"]["patient"] == pytest.approx(members[:, 1].std(), abs=1e-6)
    assert sorted(result["maps"]) == sorted(METHODS)
    assert "files" not in result  # no server file names leave the server

    tsv = client.get(f"/jobs/{job}/result?format=tsv")
    assert tsv.status_code == 200 and tsv.headers["content-type"].startswith("text/tab")
    header, row = tsv.text.strip().split("\n")
    assert header.split("\t")[:5] == [
        "name",
        "space",
        "template_correlation",
        "n_models",
        "p_control",
    ]
    assert row.split("\t")[0] == path.name


def test_map_and_scan_downloads_are_niftis_on_the_model_grid(client, engine, tiny_cohort, tmp_path):
    path = patient_scan(tiny_cohort)
    job = upload(client, path.name, path.read_bytes()).json()["id"]
    wait(client, job)
    grid = engine.ensemble.run.grid
    for url in (f"/jobs/{job}/map.nii.gz?method=gradient", f"/jobs/{job}/scan.nii.gz"):
        r = client.get(url)
        assert r.status_code == 200, r.text
        assert "attachment" in r.headers["content-disposition"]
        out = tmp_path / "x.nii.gz"
        out.write_bytes(r.content)
        img = nib.load(out)
        assert img.shape == tuple(grid.shape)
        assert np.allclose(img.affine, grid.affine)
    data = np.asarray(img.dataobj)  # the scan: the volume the models saw (z-scored)
    assert data.std() > 0
    amap = np.asarray(
        nib.load(_fetch(client, f"/jobs/{job}/map.nii.gz?method=hires_cam", tmp_path)).dataobj
    )
    assert 0 < np.abs(amap).max() <= 1.0 + 1e-6  # each fold map scaled to max |value| 1
    default = _fetch(client, f"/jobs/{job}/map.nii.gz", tmp_path)  # first method
    assert np.allclose(
        np.asarray(nib.load(default).dataobj), _load(client, job, "gradient", tmp_path)
    )


def _fetch(client, url, tmp_path) -> Path:
    r = client.get(url)
    assert r.status_code == 200, r.text
    out = tmp_path / f"f{abs(hash(url))}.nii.gz"
    out.write_bytes(r.content)
    return out


def _load(client, job, method, tmp_path):
    return np.asarray(
        nib.load(_fetch(client, f"/jobs/{job}/map.nii.gz?method={method}", tmp_path)).dataobj
    )


def test_gradient_map_of_the_ensemble_points_at_the_planted_regions(client, tiny_cohort, tmp_path):
    """The fold-ensemble map of patients is higher inside the planted effect than outside.

    ROC AUC of |gradient| inside vs outside the ground-truth mask (brain voxels), mean over
    the first three patients, measured on tiny runs with training seeds 7 (the fixture's),
    0, 1, 2, 3: 0.724, 0.721, 0.670, 0.683, 0.698; asserted > 0.6.
    """
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from brainmaps.data.preprocess import mni_brain_mask, resample_to_grid

    table = pd.read_csv(tiny_cohort / "participants.tsv", sep="\t", dtype=str)
    patients = table.loc[table["group"] == "patient", "participant_id"].iloc[:3]
    truth_img = nib.load(tiny_cohort / "ground_truth_mask.nii.gz")
    run_grid = client.app.state.engine.ensemble.run.grid
    truth = resample_to_grid(truth_img, run_grid, order=0) > 0.5
    brain = mni_brain_mask(run_grid)
    aucs = []
    for subject in patients:
        path = scan_of(tiny_cohort, subject)
        job = upload(client, path.name, path.read_bytes()).json()["id"]
        wait(client, job)
        amap = np.abs(_load(client, job, "gradient", tmp_path))
        aucs.append(roc_auc_score(truth[brain], amap[brain]))
    assert np.mean(aucs) > 0.6, aucs


def test_zip_of_scans_gives_one_result_each(client, tiny_cohort):
    a, b = scan_of(tiny_cohort, "sub-0001"), scan_of(tiny_cohort, "sub-0002")
    content = zip_bytes({"scans/a.nii.gz": a.read_bytes(), "b.nii.gz": b.read_bytes()})
    r = upload(client, "two.zip", content)
    assert r.status_code == 202, r.text
    assert r.json()["scans"] == ["a.nii.gz", "b.nii.gz"]
    job = r.json()["id"]
    assert wait(client, job)["status"] == "done"
    results = client.get(f"/jobs/{job}/result").json()["results"]
    expected = predict_run(client.app.state.engine.ensemble.run.path, [a, b])
    for res, (_, row) in zip(results, expected.iterrows(), strict=True):
        assert res["probabilities"]["patient"] == pytest.approx(row["p_patient"], abs=1e-6)
    assert client.get(f"/jobs/{job}/map.nii.gz?scan=1").status_code == 200
    assert client.get(f"/jobs/{job}/map.nii.gz?scan=2").status_code == 404


def test_native_scan_is_registered(client, tiny_cohort):
    """A scan moved out of MNI space (rotated 12 degrees, shifted 25 mm) is registered."""
    from scipy import ndimage

    img = nib.load(scan_of(tiny_cohort))
    data = np.asarray(img.dataobj, dtype=np.float32)
    moved = ndimage.rotate(data, 12, axes=(1, 2), reshape=False, order=1)
    moved = ndimage.shift(moved, (6, -4, 3), order=1)  # voxels of 4 mm
    native = nib.Nifti1Image(moved, np.diag([4.0, 4.0, 4.0, 1.0]))  # origin at a corner
    r = upload(client, "native_T1w.nii.gz", gzip.compress(native.to_bytes()))
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    status = wait(client, job)
    assert status["status"] == "done", status
    result = client.get(f"/jobs/{job}/result").json()["results"][0]
    assert result["space"] == "registered"
    assert result["template_correlation"] >= 0.25
    assert "registering" in result["seconds"]
    forced = upload(client, "mni_T1w.nii.gz", scan_of(tiny_cohort).read_bytes(), space="native")
    res = client.get(f"/jobs/{wait(client, forced.json()['id']) and forced.json()['id']}/result")
    assert res.json()["results"][0]["space"] == "registered"


# -- bad input: always a 4xx with a JSON error, never a 500 --------------------------------
def _bad(client, name, content, status, *words, space="auto"):
    r = upload(client, name, content, space=space)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    for word in words:
        assert word in message, message
    return message


def test_wrong_type_and_content(client, tiny_cohort):
    _bad(client, "scan.png", b"\x89PNG\r\n\x1a\n" + b"0" * 400, 415, "scan.png")
    _bad(client, "scan.nii.gz", b"just some text, not an image" * 30, 415, "scan.nii.gz")
    raw = nifti_bytes(np.random.default_rng(0).random((40, 40, 40), dtype=np.float32), gz=False)
    _bad(client, "scan.nii.gz", raw, 415, "scan.nii.gz")  # plain NIfTI under a .gz name
    _bad(client, "empty.nii", b"", 400, "empty.nii")


def test_corrupt_gzip_is_refused_with_its_name(client, tiny_cohort):
    good = scan_of(tiny_cohort).read_bytes()
    _bad(client, "cut.nii.gz", good[: len(good) // 2], 422, "cut.nii.gz")


def test_unusable_volumes(client):
    rng = np.random.default_rng(1)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    four_d = rng.random((50, 50, 50, 3), dtype=np.float32)
    _bad(client, "fmri.nii.gz", nifti_bytes(four_d, affine), 422, "fmri.nii.gz", "volume")
    nan = rng.random((50, 50, 50), dtype=np.float32)
    nan[3, 3, 3] = np.nan
    _bad(client, "nan.nii.gz", nifti_bytes(nan, affine), 422, "nan.nii.gz")
    _bad(client, "flat.nii.gz", nifti_bytes(np.ones((50, 50, 50), np.float32), affine), 422, "flat")
    small = rng.random((10, 10, 10), dtype=np.float32)
    _bad(client, "small.nii.gz", nifti_bytes(small, affine), 422, "small.nii.gz", "field of view")


def test_not_a_brain_fails_the_job_with_a_clear_message(client):
    noise = np.random.default_rng(2).random((60, 72, 60), dtype=np.float32)
    r = upload(client, "noise.nii.gz", nifti_bytes(noise, np.diag([3.0, 3.0, 3.0, 1.0])))
    assert r.status_code == 202  # readable: only registration can tell
    job = r.json()["id"]
    status = wait(client, job)
    assert status["status"] == "failed"
    assert status["error"].startswith("noise.nii.gz: ")
    assert "no brain found" in status["error"] or "registration failed" in status["error"]
    result = client.get(f"/jobs/{job}/result")
    assert result.status_code == 422 and "noise.nii.gz" in result.json()["error"]
    assert client.get(f"/jobs/{job}/map.nii.gz").status_code == 422


def test_zip_limits(client, tiny_cohort):
    scan = scan_of(tiny_cohort).read_bytes()
    _bad(client, "evil.zip", zip_bytes({"../evil.nii.gz": scan}), 400, "traversal")
    many = {f"s{i}.nii.gz": scan for i in range(11)}
    _bad(client, "many.zip", zip_bytes(many), 413, "many.zip")
    _bad(client, "none.zip", zip_bytes({"notes.txt": b"hello"}), 415, "notes.txt")
    mixed = zip_bytes({"ok.nii.gz": scan, "bad.nii.gz": scan[:200]})
    _bad(client, "mixed.zip", mixed, 415, "bad.nii.gz")


def test_zip_bomb_is_refused(engine, tmp_path):
    bomb = zip_bytes({"bomb.nii": b"\0" * (30 * 2**20)})  # 30 MB of zeros, ~30 KB zipped
    settings = ServeSettings(
        root=tmp_path / "jobs", limits=UploadLimits(max_uncompressed_bytes=10 * 2**20)
    )
    with TestClient(create_app(engine, settings)) as c:
        r = upload(c, "bomb.zip", bomb)
        assert r.status_code == 413, r.text
        assert "bomb" in r.json()["error"]
        assert list((tmp_path / "jobs").iterdir()) == []  # nothing left behind


def test_upload_size_limit_while_streaming(engine, tmp_path, tiny_cohort):
    settings = ServeSettings(root=tmp_path / "jobs", max_upload_bytes=50_000)
    big = scan_of(tiny_cohort).read_bytes() + b"\0" * 200_000
    with TestClient(create_app(engine, settings)) as c:
        r = upload(c, "big.nii.gz", big)
        assert r.status_code == 413 and "limit" in r.json()["error"]

        def chunks():  # no Content-Length: the limit is found while the body streams
            body = (
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.nii.gz"\r\n\r\n'
            )
            yield body
            for _ in range(100):
                yield b"\0" * 10_000

        r = c.post(
            "/predict",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert r.status_code == 413, r.text
        assert list((tmp_path / "jobs").iterdir()) == []


def test_malformed_requests(client):
    r = client.post("/predict", content=b"raw bytes", headers={"content-type": "application/gzip"})
    assert r.status_code == 415 and "multipart" in r.json()["error"]
    r = client.post("/predict", data={"other": "x"})
    assert r.status_code in (400, 415) and "error" in r.json()
    r = client.post(
        "/predict",
        files=[("file", ("a.nii.gz", b"x")), ("file", ("b.nii.gz", b"y"))],
    )
    assert r.status_code == 400 and "several files" in r.json()["error"]
    r = upload(client, "a.nii.gz", b"x", space="elsewhere")
    assert r.status_code == 422 and "space" in r.json()["error"]


def test_unknown_jobs_methods_and_scans(client, tiny_cohort):
    assert client.get("/jobs/nope").status_code == 404
    assert client.get("/jobs/" + "0" * 32 + "/result").status_code == 404
    assert client.get("/jobs/..%2F..%2Fetc/result").status_code == 404
    path = scan_of(tiny_cohort)
    job = upload(client, path.name, path.read_bytes()).json()["id"]
    wait(client, job)
    r = client.get(f"/jobs/{job}/map.nii.gz?method=../../passwd")
    assert r.status_code == 404 and "gradient" in r.json()["error"]
    assert client.get(f"/jobs/{job}/map.nii.gz?scan=-1").status_code == 422
    assert client.get(f"/jobs/{job}/result?format=xml").status_code == 422


# -- page, headers, schema -----------------------------------------------------------------
def test_page_static_files_and_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "/static/vendor/niivue.umd.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../app.py").status_code == 404


def test_openapi_schema_lists_the_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/health",
        "/predict",
        "/jobs/{job_id}",
        "/jobs/{job_id}/result",
        "/jobs/{job_id}/map.nii.gz",
        "/jobs/{job_id}/scan.nii.gz",
    ):
        assert path in paths, sorted(paths)


# -- token, queue, retention ---------------------------------------------------------------
def test_token_guards_the_api_not_the_page(engine, tmp_path, tiny_cohort):
    settings = ServeSettings(root=tmp_path / "jobs", token="s3cret-token")
    path = scan_of(tiny_cohort)
    with TestClient(create_app(engine, settings)) as c:
        assert c.get("/").status_code == 200
        assert c.get("/health").json()["auth"] is True
        r = upload(c, path.name, path.read_bytes())
        assert r.status_code == 401 and "token" in r.json()["error"]
        bad = {"Authorization": "Bearer wrong"}
        assert upload(c, path.name, path.read_bytes(), headers=bad).status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        r = upload(c, path.name, path.read_bytes(), headers=good)
        assert r.status_code == 202
        job = r.json()["id"]
        assert c.get(f"/jobs/{job}").status_code == 401
        assert wait(c, job, headers=good)["status"] == "done"


class _Held:
    """An engine whose jobs wait until released (to fill the queue)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.release = threading.Event()
        self.methods = engine.methods

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def process(self, *args, **kwargs):
        self.release.wait(30)
        return self.engine.process(*args, **kwargs)


def test_full_queue_answers_503_with_retry_after(engine, tmp_path, tiny_cohort):
    held = _Held(engine)
    settings = ServeSettings(root=tmp_path / "jobs", workers=1, max_queued=1)
    path = scan_of(tiny_cohort)
    with TestClient(create_app(held, settings)) as c:
        first = upload(c, path.name, path.read_bytes())
        second = upload(c, path.name, path.read_bytes())
        assert first.status_code == second.status_code == 202
        early = c.get(f"/jobs/{first.json()['id']}/result")
        assert early.status_code == 409 and "not finished" in early.json()["error"]
        third = upload(c, path.name, path.read_bytes())
        assert third.status_code == 503, third.text
        assert int(third.headers["retry-after"]) >= 1
        assert "busy" in third.json()["error"]
        held.release.set()
        for r in (first, second):
            assert wait(c, r.json()["id"])["status"] == "done"
        assert upload(c, path.name, path.read_bytes()).status_code == 202


def test_uploads_deleted_after_the_job_and_results_after_retention(engine, tmp_path, tiny_cohort):
    settings = ServeSettings(root=tmp_path / "jobs", retention_s=60)
    path = scan_of(tiny_cohort)
    with TestClient(create_app(engine, settings)) as c:
        job = upload(c, path.name, path.read_bytes()).json()["id"]
        wait(c, job)
        folder = tmp_path / "jobs" / job
        names = sorted(p.name for p in folder.iterdir())
        assert not [
            n
            for n in names
            if n.startswith("scan-") and n.endswith((".nii", ".nii.gz")) and "_" not in n
        ], names
        assert any(n.endswith("_gradient.nii.gz") for n in names)
        manager = c.app.state.manager
        assert manager.purge(now=time.time() + 120) == 1
        assert not folder.exists()
        assert c.get(f"/jobs/{job}").status_code == 404
    assert not (tmp_path / "jobs").exists()  # the server's folder goes at shutdown


# -- engine options ------------------------------------------------------------------------
def test_threshold_moves_the_call(tiny_run, tiny_cohort, tmp_path):
    path = patient_scan(tiny_cohort)
    p = predict_run(tiny_run, [path]).iloc[0]["p_patient"]
    strict = Engine(tiny_run, methods=[], threshold=min(0.999, p + (1 - p) / 2))
    result = strict.process(path, path.name, tmp_path)
    assert result["call"] == "control"
    assert result["threshold"]["value"] == pytest.approx(min(0.999, p + (1 - p) / 2))
    lenient = Engine(tiny_run, methods=[], threshold=max(0.001, p / 2))
    assert lenient.process(path, path.name, tmp_path)["call"] == "patient"


def test_engine_refuses_bad_settings(tiny_run):
    from brainmaps.exceptions import ConfigError

    with pytest.raises(ConfigError, match="threshold"):
        Engine(tiny_run, methods=[], threshold=1.5)
    with pytest.raises(ConfigError, match=r"no_such_method|unknown"):
        Engine(tiny_run, methods=["no_such_method"])
    with pytest.raises(ConfigError, match="space"):
        Engine(tiny_run, methods=[]).process(Path("x.nii"), "x.nii", Path("."), space="mars")


def test_cli_warns_when_bound_to_all_interfaces(tiny_run, monkeypatch, capsys):
    import uvicorn

    from brainmaps.cli.main import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert main(["serve", str(tiny_run), "--host", "0.0.0.0", "--methods", "none"]) == 0
    assert calls and calls[0]["host"] == "0.0.0.0"
    assert "without --token" in capsys.readouterr().err
    assert main(["serve", str(tiny_run), "--host", "0.0.0.0", "--token", "long-enough-token"]) == 0
    assert "without --token" not in capsys.readouterr().err
    assert main(["serve", str(tiny_run), "--port", "70000"]) != 0
    assert "--port" in capsys.readouterr().err
