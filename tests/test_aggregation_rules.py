"""Robust aggregation rules (defenses/federated) against Flower's reference functions, per-row semantics,
fallback, clipping, state and the uploader-count gate, all on hand-made per-client arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.server.strategy.aggregate import (aggregate_bulyan, aggregate_krum, aggregate_median,
                                            aggregate_trimmed_avg)
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from flwr.serverapp.strategy.multikrum import select_multikrum

from defenses.federated import base
from defenses.federated.base import (coordinate_median, padded_columns, row_columns, row_groups, sort_last_,
                                      sorted_median, sorted_values, stable_order, trimmed_sum)
from federation.config import SimulationConfig
from federation.uploads import ClientUploads
from recsys import native
from recsys.models.ncf import ITEM_EMBEDDING, NCFSpec
from server.aggregation import Aggregate, AggregationRule, RoundInfo, load_rule

SPEC = NCFSpec(num_items=7, dim=3, layers=(4,))  # MLP: weight [4, 6], bias [4], weight [1, 4], bias [1]
MLP_SHAPES = {name: shape for name, shape in SPEC.shapes().items() if name != ITEM_EMBEDDING}


# ---- helpers ----------------------------------------------------------------------------------------------
def make_uploads(rows: np.ndarray, mask: np.ndarray, mlp: dict[str, np.ndarray] | None = None) -> ClientUploads:
    """``ClientUploads`` of B clients from dense per-client item rows ``[B, I, d]``, the rows each client
    uploads (``mask [B, I]``) and MLP gradients ``[B, *shape]`` (zeros when not given)."""
    count = rows.shape[0]
    owner, items = np.nonzero(mask)  # client-major, items ascending per client
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))])
    mlp = mlp or {name: np.zeros((count, *shape)) for name, shape in MLP_SHAPES.items()}
    return ClientUploads(np.arange(count), {k: torch.tensor(v) for k, v in mlp.items()}, torch.tensor(indptr),
                         torch.tensor(items), torch.tensor(rows[owner, items]), torch.zeros(count, dtype=torch.float64))


def random_uploads(count: int, seed: int, density: tuple[float, ...] = (1, 0.9, 0.7, 0.5, 0.35, 0.25, 0)):
    """Random float64 uploads; item j is uploaded by each client with probability density[j]."""
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(count, SPEC.num_items, SPEC.dim))
    mask = rng.random((count, SPEC.num_items)) < np.array(density)[None, :]
    mlp = {name: rng.normal(size=(count, *shape)) for name, shape in MLP_SHAPES.items()}
    return rows, mask, mlp


def rule(name: str, **settings) -> AggregationRule:
    return load_rule(SimulationConfig(aggregation=name, **settings), SPEC)


def run(agg: AggregationRule, uploads: ClientUploads, malicious: np.ndarray | None = None, round_: int = 1,
        targets: tuple[int, ...] = ()) -> Aggregate:
    flags = np.zeros(uploads.num_clients, bool) if malicious is None else malicious
    return agg.aggregate(uploads, RoundInfo(round_, torch.tensor(targets, dtype=torch.int64), flags))


# ---- Flower's reference rules on one group (each upload a list of arrays), mean scale -----------------------
def flower_bulyan(layers: list[list[np.ndarray]], f: int) -> list[np.ndarray]:
    """flwr.serverapp.strategy.Bulyan.aggregate_train's arithmetic: one-shot Multi-Krum selection of θ = n − 2f,
    then the mean of the β = θ − 2f values closest to the coordinate median."""
    theta = len(layers) - 2 * f
    contents = [RecordDict({"arrays": ArrayRecord([np.copy(a) for a in upload])}) for upload in layers]
    chosen = [c["arrays"].to_numpy_ndarrays() for c in select_multikrum(contents, f, theta)]
    median = [np.median(np.stack(layer), axis=0) for layer in zip(*chosen)]
    return aggregate_n_closest_weights(median, chosen, theta - 2 * f)


FLOWER = {
    "median": (lambda results, f: aggregate_median(results), 1),
    "trimmed-mean": (lambda results, f: aggregate_trimmed_avg(results, 0.2), 1),
    "krum": (lambda results, f: aggregate_krum(results, f, 0), "krum"),
    "multi-krum": (lambda results, f: aggregate_krum(results, f, len(results) - f), "krum"),
    "bulyan": (lambda results, f: flower_bulyan([w for w, _ in results], f), "bulyan"),
}


def reference(name: str, layers: list[list[np.ndarray]], f: int) -> list[np.ndarray]:
    """n × Flower's rule on the group, or n × the coordinate median where the group is too small for it."""
    function, needs = FLOWER[name]
    n = len(layers)
    minimum = {1: 1, "krum": 2 * f + 3, "bulyan": 4 * f + 3}[needs]
    results = [([np.copy(a) for a in upload], 1) for upload in layers]
    out = function(results, f) if n >= minimum else aggregate_median(results)
    return [n * np.asarray(a) for a in out]


def group_f(policy: str, malicious: np.ndarray) -> int:
    """f of a group whose uploads have ground truth ``malicious`` (written independently of base.py)."""
    n = len(malicious)
    if policy == "oracle":
        return int(malicious.sum())
    return min(int(policy.split(":")[1]), (n - 1) // 2)


# ---- (1) equality with Flower ---------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["bound:1", "bound:2", "oracle"])
@pytest.mark.parametrize("name", list(FLOWER))
def test_row_scope_equals_flower_per_row_and_per_mlp_tensor(name: str, policy: str) -> None:
    """Each item row over its own uploaders and each MLP tensor over all clients equal n × Flower's rule
    (a per-row loop), small rows falling back to the median."""
    rows, mask, mlp = random_uploads(13, seed=len(name) + len(policy))
    malicious = np.random.default_rng(1).random(13) < 0.2
    out = run(rule(name, assumed_malicious=policy, trim_fraction=0.2), make_uploads(rows, mask, mlp), malicious)
    for j in range(SPEC.num_items):
        who = mask[:, j]
        expected = reference(name, [[r] for r in rows[who, j]], group_f(policy, malicious[who]))[0] if who.any() \
            else np.zeros(SPEC.dim)
        np.testing.assert_allclose(out.step[ITEM_EMBEDDING][j].numpy(), expected, rtol=1e-12, atol=1e-12)
    for key, value in mlp.items():
        expected = reference(name, [[v.ravel()] for v in value], group_f(policy, malicious))[0]
        np.testing.assert_allclose(out.step[key].numpy().ravel(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(FLOWER))
def test_vector_scope_equals_flower_on_whole_uploads(name: str) -> None:
    """Scope ``vector``: each client's whole upload (zero-filled item rows, then the MLP) is one of Flower's
    multi-layer models."""
    rows, mask, mlp = random_uploads(11, seed=5)
    out = run(rule(name, aggregation_scope="vector", assumed_malicious="bound:2", trim_fraction=0.2),
              make_uploads(rows, mask, mlp))
    dense = rows * mask[:, :, None]
    expected = reference(name, [[dense[b], *(v[b] for v in mlp.values())] for b in range(11)], 2)
    for got, want in zip([out.step[ITEM_EMBEDDING], *(out.step[k] for k in mlp)], expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


def test_bulyan_selection_is_one_shot_not_flowers_legacy_iterative_krum() -> None:
    """Flower's legacy ``aggregate_bulyan(..., aggregate_krum, to_keep=0)`` re-runs Krum after each pick;
    ``bulyan`` follows ``serverapp.strategy.Bulyan`` (one-shot Multi-Krum), and the two differ here."""
    x = np.random.default_rng(1).normal(size=(11, 4))
    out = run(rule("bulyan", aggregation_scope="vector", assumed_malicious="bound:2"),
              make_uploads(np.zeros((11, SPEC.num_items, SPEC.dim)), np.zeros((11, SPEC.num_items), bool),
                           {**{k: np.zeros((11, *s)) for k, s in MLP_SHAPES.items()}, "mlp.0.bias": x}))
    one_shot = 11 * flower_bulyan([[a] for a in x], 2)[0]
    legacy = 11 * aggregate_bulyan([([a], 1) for a in x], 2, aggregate_krum, to_keep=0)[0]
    np.testing.assert_allclose(out.step["mlp.0.bias"].numpy(), one_shot, rtol=1e-12)
    assert np.abs(one_shot - legacy).max() > 1e-3


def test_trimmed_mean_trims_floor_of_beta_n_without_float_error() -> None:
    """Both trim ⌊β·n⌋ per tail, but Flower's int(β·n) cuts 28 at β = 0.29, n = 100 (0.29·100 =
    28.999…96 in floating point); ``trimmed-mean`` cuts 29."""
    values = np.random.default_rng(4).normal(size=(100, 1, 1))
    uploads = make_uploads(np.repeat(values, SPEC.num_items, 1).repeat(SPEC.dim, 2),
                           np.eye(1, SPEC.num_items, dtype=bool).repeat(100, 0))
    got = run(rule("trimmed-mean", trim_fraction=0.29), uploads).step[ITEM_EMBEDDING][0, 0].item()
    ordered = np.sort(values.ravel())
    assert got == pytest.approx(100 * ordered[29:71].mean(), rel=1e-12)
    flower = 100 * aggregate_trimmed_avg([([v], 1) for v in values.ravel()], 0.29)[0]
    assert flower == pytest.approx(100 * ordered[28:72].mean(), rel=1e-12)



def test_fast_cpu_sorts_give_torchs_order_and_values() -> None:
    """The radix order of the row grouping is ``torch.argsort(stable=True)``; numpy's in-place row sort gives
    ``torch.sort``'s values (padding +inf last)."""
    gen = torch.Generator().manual_seed(2)
    keys = torch.randint(0, 3000, (5000,), generator=gen)
    assert torch.equal(stable_order(keys, 3000), torch.argsort(keys, stable=True))
    rows = torch.randn((40, 8, 33), generator=gen).masked_fill_(torch.rand((40, 1, 33), generator=gen) < 0.3, float("inf"))
    assert torch.equal(sort_last_(rows.clone()), rows.sort(dim=-1).values)

def float32_uploads(uploads: ClientUploads) -> ClientUploads:
    """The same uploads in float32, the dtype a run uses (and the native row grouping takes)."""
    return ClientUploads(uploads.client_ids, {k: v.float() for k, v in uploads.dense.items()}, uploads.row_indptr,
                         uploads.row_items, uploads.row_values.float(), uploads.losses.float())


@pytest.mark.skipif(native.library() is None, reason="no C compiler to build the native kernel")
def test_native_row_grouping_equals_the_torch_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """On float32 CPU uploads the C kernel forms the groups the torch ops form, and the columns it writes for the
    coordinate-wise rules are those groups' ``padded_columns``; a median then agrees to the bit, a trimmed sum to
    float rounding (its kept ranks summed in rank order instead of by ``torch.sum``)."""
    uploads = float32_uploads(make_uploads(*random_uploads(40, seed=3, density=(1, 0.9, 0.5, 0.3, 0.1, 0.05, 0))[:2]))
    malicious = torch.as_tensor(np.random.default_rng(3).random(40) < 0.3)
    built = list(row_groups(uploads, malicious, SPEC.num_items))
    columns = [(rows, counts, c.clone()) for rows, counts, c in row_columns(uploads, SPEC.num_items)]
    trims = [torch.div(counts, 5, rounding_mode="floor") for _, counts, _ in columns]
    medians = [sorted_median(sort_last_(c.clone()), counts) for _, counts, c in columns]
    trimmed = [trimmed_sum(sort_last_(c.clone()), counts, trim) for (_, counts, c), trim in zip(columns, trims)]
    monkeypatch.setattr(base.native, "supports", lambda *tensors: False)
    reference = list(row_groups(uploads, malicious, SPEC.num_items))
    assert len(built) == len(reference) == len(columns) == 4  # n_j of 40, ~36, ~20, ~12, ~4, ~2: buckets 2^6 .. 2^1
    for group, expected, (rows, counts, column), median, kept, trim in zip(built, reference, columns, medians, trimmed,
                                                                          trims):
        for field in ("values", "counts", "malicious", "rows"):
            assert torch.equal(getattr(group, field), getattr(expected, field)), field
        assert torch.equal(rows, expected.rows) and torch.equal(counts, expected.counts)
        assert torch.equal(column, padded_columns(expected))
        assert torch.equal(median, coordinate_median(expected))
        torch.testing.assert_close(kept, trimmed_sum(sorted_values(expected), counts, trim), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["median", "trimmed-mean", "krum", "multi-krum", "bulyan", "centered-clip",
                                  "norm-bound", "dp-clip", "row-gate"])
def test_aggregation_leaves_the_uploads_unchanged(name: str, dtype: torch.dtype) -> None:
    """A rule works on copies: the server's diagnostics read the same uploads after it (sorting the [B, 1] last bias
    in place once permuted the clients' values)."""
    uploads = make_uploads(*random_uploads(12, seed=5))
    if dtype == torch.float32:
        uploads = float32_uploads(uploads)
    before = [t.clone() for t in (*uploads.dense.values(), uploads.row_values)]
    run(rule(name), uploads, malicious=np.arange(12) % 4 == 0)
    for old, new in zip(before, (*uploads.dense.values(), uploads.row_values)):
        assert torch.equal(old, new)


# ---- (2) f = 0 reduces to the sum ------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["row", "vector"])
@pytest.mark.parametrize("policy", ["fraction:0", "bound:0"])
@pytest.mark.parametrize("name", ["trimmed-mean", "multi-krum", "bulyan"])
def test_no_assumed_attacker_is_the_sum(name: str, policy: str, scope: str) -> None:
    uploads = make_uploads(*random_uploads(9, seed=7))
    out = run(rule(name, assumed_malicious=policy, trim_fraction=0.0, aggregation_scope=scope), uploads)
    for key, value in uploads.summed(SPEC.num_items).items():
        torch.testing.assert_close(out.step[key], value, rtol=1e-12, atol=1e-12)
    assert out.report["dropped_uploads"] == 0


# ---- (3) per-row semantics -------------------------------------------------------------------------------
def test_item_row_is_aggregated_over_its_uploaders_only() -> None:
    """Row 2 uploaded by 3 of 10 clients: 3 × the median of those 3 (a zero-padded median would be 0)."""
    rows = np.zeros((10, SPEC.num_items, SPEC.dim))
    rows[[1, 4, 8], 2] = [[1.0, -6.0, 2.0], [5.0, 3.0, 7.0], [9.0, 0.5, 4.0]]
    mask = np.ones((10, SPEC.num_items), bool)
    mask[:, 2] = False
    mask[[1, 4, 8], 2] = True
    uploads = make_uploads(rows, mask)
    row_scope = run(rule("median"), uploads).step[ITEM_EMBEDDING][2]
    assert row_scope.tolist() == [15.0, 1.5, 12.0]
    vector_scope = run(rule("median", aggregation_scope="vector"), uploads).step[ITEM_EMBEDDING][2]
    assert vector_scope.tolist() == [0.0, 0.0, 0.0]  # 10 × the median of 3 values and 7 zero-filled ones


# ---- (4) fallback ----------------------------------------------------------------------------------------
def test_row_too_small_for_krum_falls_back_to_median_and_is_reported() -> None:
    """bound:1 → f = 1: Krum needs 5 uploads; row 0 has 4 (median × 4), row 1 has 6 (Krum)."""
    rows = np.zeros((6, SPEC.num_items, SPEC.dim))
    rows[:4, 0, 0] = [1.0, 2.0, 10.0, 4.0]
    rows[:, 1, 0] = [0.0, 0.1, 0.25, 0.3, 5.0, 9.0]
    mask = np.zeros((6, SPEC.num_items), bool)
    mask[:4, 0] = True
    mask[:, 1] = True
    mlp = {k: np.zeros((6, *s)) for k, s in MLP_SHAPES.items()}
    out = run(rule("krum", assumed_malicious="bound:1"), make_uploads(rows, mask, mlp), targets=(0,))
    assert out.step[ITEM_EMBEDDING][0, 0].item() == pytest.approx(4 * 3.0)
    assert out.step[ITEM_EMBEDDING][1, 0].item() == pytest.approx(6 * 0.1)  # the most central of the six
    assert out.report["fallback_groups"] == 1 and out.report["fallback_target_rows"] == 1
    assert out.report["dropped_uploads"] == 5 + 4 * 5  # Krum keeps 1 of 6 in row 1 and in each MLP tensor


# ---- (5) norm-bound --------------------------------------------------------------------------------------
def test_norm_bound_clips_each_row_each_neuron_and_each_bias() -> None:
    rows = np.zeros((2, SPEC.num_items, SPEC.dim))
    rows[0, 0] = [3.0, 4.0, 0.0]  # norm 5 → clipped to 1
    rows[1, 0] = [0.0, 0.6, 0.0]  # norm 0.6, kept
    mask = np.zeros((2, SPEC.num_items), bool)
    mask[:, 0] = True
    mlp = {k: np.zeros((2, *s)) for k, s in MLP_SHAPES.items()}
    mlp["mlp.0.weight"][0, 0, :2] = [0.0, 2.0]  # neuron 0: norm 2 → 0.5
    mlp["mlp.0.weight"][0, 1, :2] = [0.3, 0.0]  # neuron 1: kept
    mlp["mlp.0.bias"][1] = [0.4, 0.0, 0.0, 0.3]  # whole bias: norm 0.5, kept
    mlp["mlp.0.bias"][0] = [2.0, 0.0, 0.0, 0.0]  # whole bias: norm 2 → 0.5
    agg = rule("norm-bound", clip_row=1.0, clip_mlp=0.5)
    out = run(agg, make_uploads(rows, mask, mlp), malicious=np.array([True, False]))
    np.testing.assert_allclose(out.step[ITEM_EMBEDDING][0].numpy(), [0.6, 0.8 + 0.6, 0.0])
    np.testing.assert_allclose(out.step["mlp.0.weight"][0, :2].numpy(), [0.0, 0.5])
    np.testing.assert_allclose(out.step["mlp.0.weight"][1, :2].numpy(), [0.3, 0.0])
    np.testing.assert_allclose(out.step["mlp.0.bias"].numpy(), [0.9, 0.0, 0.0, 0.3])
    assert out.report["clipped_uploads"] == 3 and out.report["clipped_malicious_uploads"] == 3


def test_without_an_absolute_bound_tau_is_the_rounds_norm_quantile() -> None:
    """τ_row = the 0.9 quantile of the round's uploaded row norms; τ_mlp that of its neuron and bias norms."""
    rows, mask, mlp = random_uploads(12, seed=3)
    uploads = make_uploads(rows, mask, mlp)
    out = run(rule("norm-bound"), uploads)
    expected_row = torch.quantile(uploads.row_values.double().norm(dim=1), 0.9)
    neurons = torch.cat([v.double().norm(dim=-1).flatten() for v in uploads.dense.values()])
    assert out.report["clip_row"] == pytest.approx(float(expected_row))
    assert out.report["clip_mlp"] == pytest.approx(float(torch.quantile(neurons, 0.9)))
    clipped = (uploads.row_values.double().norm(dim=1) > expected_row).sum() + (neurons > torch.quantile(neurons, 0.9)).sum()
    assert out.report["clipped_uploads"] == int(clipped)
    upload_norms = uploads.squared_norms().double().sqrt()
    dp = run(rule("dp-clip", dp_noise_multiplier=0.0), uploads)
    assert dp.report["clip_upload"] == pytest.approx(float(torch.quantile(upload_norms, 0.9)))
    assert dp.report["clipped_uploads"] == int((upload_norms > torch.quantile(upload_norms, 0.9)).sum())


# ---- (6) centered-clip -----------------------------------------------------------------------------------
def test_centered_clip_with_a_huge_bound_is_the_mean_after_one_iteration() -> None:
    rows, mask, mlp = random_uploads(9, seed=8)
    uploads = make_uploads(rows, mask, mlp)
    out = run(rule("centered-clip", clip_row=1e9, clip_mlp=1e9, clip_iterations=1), uploads)
    for key, value in uploads.summed(SPEC.num_items).items():
        torch.testing.assert_close(out.step[key], value, rtol=1e-12, atol=1e-12)


def test_centered_clip_iterates_from_the_rows_last_aggregate_and_its_state_round_trips() -> None:
    rows = np.zeros((2, SPEC.num_items, SPEC.dim))
    rows[0, 0, 0] = 3.0
    mask = np.zeros((2, SPEC.num_items), bool)
    mask[:, 0] = True
    uploads = make_uploads(rows, mask)
    agg = rule("centered-clip", clip_row=1.0, clip_mlp=1.0, clip_iterations=2)
    # from 0: diffs (3, 0) → (1, 0), v = 0.5; diffs (2.5, −0.5) → (1, −0.5), v = 0.75; step 2v
    assert run(agg, uploads).step[ITEM_EMBEDDING][0, 0].item() == pytest.approx(1.5)
    restored = rule("centered-clip", clip_row=1.0, clip_mlp=1.0, clip_iterations=2)
    restored.load_state_dict(agg.state_dict())
    # from 0.75: diffs (2.25, −0.75) → (1, −0.75), v = 0.875;
    #            diffs (2.125, −0.875) → (1, −0.875), v = 0.9375; step 2v
    for resumed in (agg, restored):
        assert run(resumed, uploads, round_=2).step[ITEM_EMBEDDING][0, 0].item() == pytest.approx(1.875)


# ---- (7) dp-clip -----------------------------------------------------------------------------------------
def test_dp_clip_without_noise_is_the_sum_of_whole_clipped_uploads() -> None:
    rows, mask, mlp = random_uploads(6, seed=9)
    uploads = make_uploads(rows, mask, mlp)
    squares = (rows ** 2 * mask[:, :, None]).sum((1, 2)) + sum((v ** 2).reshape(6, -1).sum(1) for v in mlp.values())
    scale = np.minimum(1.0, 7.0 / np.sqrt(squares))
    assert (scale < 1).any() and (scale == 1).any()
    out = run(rule("dp-clip", clip_row=7.0, dp_noise_multiplier=0.0), uploads)
    np.testing.assert_allclose(out.step[ITEM_EMBEDDING].numpy(),
                               np.einsum("b,bid->id", scale, rows * mask[:, :, None]), rtol=1e-12, atol=1e-12)
    for key, value in mlp.items():
        np.testing.assert_allclose(out.step[key].numpy(), np.tensordot(scale, value, 1), rtol=1e-12, atol=1e-12)
    assert out.report["clipped_uploads"] == int((scale < 1).sum())


def test_dp_clip_noise_is_seeded_by_run_and_round_and_only_on_touched_rows() -> None:
    uploads = make_uploads(*random_uploads(6, seed=10))
    clean = run(rule("dp-clip", clip_row=2.0, dp_noise_multiplier=0.0), uploads).step
    noisy = lambda seed, round_: run(rule("dp-clip", clip_row=2.0, dp_noise_multiplier=0.5, seed=seed),  # noqa: E731
                                     uploads, round_=round_).step
    first, again, other_round, other_seed = noisy(0, 1), noisy(0, 1), noisy(0, 2), noisy(1, 1)
    for key in clean:
        assert torch.equal(first[key], again[key])
        assert not torch.equal(first[key], other_round[key]) and not torch.equal(first[key], other_seed[key])
    noise = first[ITEM_EMBEDDING] - clean[ITEM_EMBEDDING]
    touched = torch.bincount(uploads.row_items, minlength=SPEC.num_items) > 0
    assert not touched[-1] and (noise[~touched] == 0).all() and (noise[touched] != 0).all()
    assert 0.5 < noise[touched].std().item() < 1.6  # std z·τ = 1


# ---- (8) the uploader-count gate -------------------------------------------------------------------------
def test_gate_trims_a_row_whose_uploader_count_jumps_and_sums_steady_rows() -> None:
    """Row 0: 4 uploaders every round. Row 1: 9 uploaders for 5 rounds (m = 9), then 7 attackers join:
    16 > 9 + 2·3, so 7 values are cut from each tail and the step is 16 × the mean of the middle two."""
    rng = np.random.default_rng(11)
    agg = rule("row-gate", gate_threshold=2.0)
    mask = np.zeros((16, SPEC.num_items), bool)
    mask[:4, 0] = True
    mask[:9, 1] = True
    for round_ in range(1, 6):
        rows = rng.normal(size=(16, SPEC.num_items, SPEC.dim))
        out = run(agg, make_uploads(rows, mask), round_=round_, targets=(1,))
        summed = make_uploads(rows, mask).summed(SPEC.num_items)[ITEM_EMBEDDING]
        torch.testing.assert_close(out.step[ITEM_EMBEDDING], summed, rtol=1e-12, atol=1e-12)
        assert out.report["gated_rows"] == 0
    restored = rule("row-gate", gate_threshold=2.0)
    restored.load_state_dict(agg.state_dict())
    rows = rng.normal(size=(16, SPEC.num_items, SPEC.dim))
    rows[9:, 1] = 10.0
    mask[9:, 1] = True
    malicious = np.arange(16) >= 9
    for gate in (agg, restored):
        out = run(gate, make_uploads(rows, mask), malicious, round_=6, targets=(1,))
        middle = np.sort(rows[:9, 1], axis=0)[7:9].mean(0)
        np.testing.assert_allclose(out.step[ITEM_EMBEDDING][1].numpy(), 16 * middle, rtol=1e-12)
        np.testing.assert_allclose(out.step[ITEM_EMBEDDING][0].numpy(), rows[:4, 0].sum(0), rtol=1e-12)
        assert out.report["gated_rows"] == 1 and out.report["gated_target_rows"] == 1
        assert out.report["trimmed_per_tail"] == 7


def test_gate_needs_row_scope() -> None:
    with pytest.raises(ValueError, match="aggregation-scope row"):
        rule("row-gate", aggregation_scope="vector")
