"""Several extractions of one store at once: each group is written by one process at a time, and what any of them
leaves is whole and consistent, never a group marked complete whose variables hold different numbers of samples."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import xarray as xr
from conftest import REPO_ROOT

from probe.analysis.representations import representation_dataset
from probe.analysis.stores import list_networks, open_store
from probe.execution.extract import extract_run
from probe.planning.plan import read_plan
from probe.storage.activation_store import verify_group

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning", "ignore::RuntimeWarning")

BATCH = 8  # many small appends per group: two writers of one group would interleave them


@pytest.fixture(scope="module")
def run(anb_run):
    return anb_run


@pytest.fixture(scope="module")
def pristine(run, tmp_path_factory):
    """The store one extraction alone writes."""
    store = tmp_path_factory.mktemp("pristine") / "acts.zarr"
    extract_run(run, store, batch_size=BATCH, progress=False)
    return store


def _extract(run_dir, store, cache_dir, *options) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "probe.cli.main", "extract", str(run_dir), "--out", str(store), "--quiet",
           "--device", "cpu", "--cache-dir", str(cache_dir), "--batch-size", str(BATCH), *options]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sample_sizes(store, network_id) -> dict[str, int]:
    """The length along ``sample`` of every array of the group, as its metadata says."""
    sizes = {}
    for meta in (store / network_id).glob("*/zarr.json"):
        node = json.loads(meta.read_text())
        if "sample" in (node.get("dimension_names") or []):
            sizes[meta.parent.name] = node["shape"][node["dimension_names"].index("sample")]
    return sizes


@pytest.mark.parametrize("stagger", [0.0, 0.0, 3.0])
def test_two_extractions_of_one_store_leave_it_whole(run, pristine, tmp_path, cache_dir, stagger):
    store = tmp_path / "acts.zarr"
    first = _extract(run, store, cache_dir)
    time.sleep(stagger)
    second = _extract(run, store, cache_dir)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    for proc, (out, err) in zip((first, second), outs):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in err, err
    ids = [p.spec.id for p in read_plan(run)[1]]
    written = sum(int(out.split("wrote ")[1].split(",")[0]) for out, _ in outs)
    assert written == len(ids), outs  # each group written once, by one of them; the other found it complete
    for nid in ids:
        assert verify_group(store, nid) is None, nid
        sizes = _sample_sizes(store, nid)
        assert len(set(sizes.values())) == 1, (nid, sizes)
        xr.testing.assert_identical(xr.open_zarr(store, group=nid, consolidated=False).load(),
                                    xr.open_zarr(pristine, group=nid, consolidated=False).load())
    assert sorted(list_networks(xr.open_datatree(store, engine="zarr"))) == sorted(ids)  # consolidated: whole
    assert sorted(list_networks(open_store(store))) == sorted(ids)
    representation_dataset(run, store)


def test_the_first_extraction_of_a_store_claims_its_settings(tmp_path):
    """Two extractions started together with other settings: whichever claims the store first records its settings
    (under the store's lock), and the other is refused in one line before it writes anything."""
    from probe.errors import ProbeError
    from probe.execution.extract import claim_settings, resolve_settings
    from probe.storage.store_settings import recorded_settings

    store = tmp_path / "acts.zarr"
    first = resolve_settings(store, {"probe_set": "both", "spatial": "sample:2", "batch_size": 16})
    second = resolve_settings(store, {})  # resolved before the first claimed the store: the defaults
    claim_settings(store, first)
    with pytest.raises(ProbeError, match="--probe-set both .*--spatial sample:2.* asks for --probe-set target") as e:
        claim_settings(store, second)
    assert "--out" in str(e.value) and "\n" not in str(e.value)
    assert recorded_settings(store) == first and first["chunk_size"] == 64  # four batches
    assert resolve_settings(store, {}) == first  # what a rerun given nothing uses
