"""Merger trees (emu_backend.trees): constructed cases with known answers, a brute-force reference of the
linking, and the written files loaded back with ytree itself.

The constructed cases place clumps of particles (Gaussian, sigma 0.3 Mpc/h) among the points of a coarse
lattice (spacing 12.5 Mpc/h, far beyond the linking length 0.2 * 100 / 8 = 2.5 Mpc/h), run the package's
FoF on each output time with the particles in a different random order (so only the Lagrangian IDs can
link them), and compare the links with the ones the construction implies.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from emu_backend.cosmology import QUIJOTE_FIDUCIAL
from emu_backend.datatypes.halos import HaloCatalog
from emu_backend.errors import InputError
from emu_backend.trees import (
    LinkConfig,
    OutputHalos,
    formation_redshifts,
    link_halos,
    load_with_ytree,
    main_branch_masses,
    match_final_halos,
    progenitor_counts,
    tree_statistics,
    write_consistent_trees,
)
from emu_backend.trees.ctrees import depth_first, last_major_merger

pytest.importorskip("halotools", reason="the package's FoF needs halotools (emu_backend[halotools])")

from emu_backend.validation.halos import find_halos  # noqa: E402

BOX, N_SIDE = 100.0, 8
N = N_SIDE**3
M_P = 1e12
LATTICE = np.stack(np.meshgrid(*[np.arange(N_SIDE) * BOX / N_SIDE] * 3, indexing="ij"), -1).reshape(-1, 3)
# clump centres at half-lattice offsets: >= 6.25 sqrt(2) Mpc/h from every lattice point
C_A, C_B, C_M = (np.array([31.25, 31.25, 31.25]), np.array([43.75, 31.25, 31.25]),
                 np.array([37.5 + 6.25, 56.25, 31.25]))


def _output(groups: dict, z: float, seed: int) -> OutputHalos:
    """FoF of the lattice with the particles ``ids`` of each group moved into a clump at ``centre``."""
    rng = np.random.default_rng(seed)
    pos = LATTICE.copy()
    vel = np.zeros((N, 3))
    for ids, centre in groups.items():
        ids = np.asarray(ids)
        pos[ids] = centre + rng.normal(0.0, 0.3, (ids.size, 3))
        vel[ids] = rng.normal(0.0, 100.0, (ids.size, 3))
    order = rng.permutation(N)  # the halo finder sees the particles in another order at every output
    cat = find_halos(pos[order], vel[order], BOX, M_P, b=0.2, min_particles=20, a=1.0 / (1.0 + z))
    return OutputHalos.from_catalog(cat, order, vel[order])


A, B = tuple(range(0, 60)), tuple(range(60, 90))


def _merger():
    return [_output({A: C_A, B: C_B}, 2.0, 1), _output({A + B: C_M}, 1.0, 2), _output({A + B: C_M}, 0.0, 3)]


def _flyby():
    return [_output({A: C_A, B: C_B}, 2.0, 1), _output({A + B: C_M}, 1.0, 2), _output({A: C_A, B: C_B}, 0.0, 3)]


def test_merger_of_two_known_groups():
    outs = _merger()
    # by construction: A (60) and B (30) at z = 2, one halo of 90 at z = 1 and z = 0
    assert [o.catalog.n_particles.tolist() for o in outs] == [[60, 30], [90], [90]]
    t = link_halos(outs)
    assert t.descendant.tolist() == [2, 2, 3, -1]
    assert t.shared.tolist() == [60, 30, 90, 0]
    assert t.main_progenitor.tolist() == [-1, -1, 0, 2]  # the more massive progenitor, A
    assert t.n_progenitors.tolist() == [0, 0, 2, 1]
    assert (t.counts["mergers"], t.counts["flybys"], t.counts["orphans"], t.counts["trees"]) == (1, 0, 0, 1)
    # the secondary progenitor's members are in the descendant's descendant: a merger, not a fly-by
    assert not t.flyby.any()
    # mass and vrms of the members: the construction's numbers (vrms of 100 km/s Gaussians, 3-D: ~173 km/s;
    # 20% covers the sampling of 30-90 particles)
    assert np.allclose(t.mass, np.array([60, 30, 90, 90]) * M_P)
    assert np.allclose(t.vrms, 100 * np.sqrt(3), rtol=0.2)
    # positions: the clump centres, to the 0.3 / sqrt(30) sampling scatter (0.2 Mpc/h is > 3 sigma)
    assert np.allclose(t.position[[0, 1, 2]], [C_A, C_B, C_M], atol=0.2)


def test_flyby_is_relinked_and_counted():
    outs = _flyby()
    t = link_halos(outs)
    # halos: 0 = A, 1 = B (z = 2); 2 = A+B (z = 1); 3 = A, 4 = B (z = 0)
    assert t.n_particles.tolist() == [60, 30, 90, 60, 30]
    assert t.flyby.tolist() == [False, True, False, False, False]
    # B skips z = 1, where FoF joined it to A, and keeps its own branch
    assert t.descendant.tolist() == [2, 4, 3, -1, -1]
    assert t.main_progenitor.tolist() == [-1, -1, 0, 2, 1]
    assert (t.counts["flybys"], t.counts["mergers"], t.counts["new_halos"]) == (1, 0, 0)
    kept = link_halos(outs, LinkConfig(skip_one_output=False))
    # without relinking: a merger at z = 1, and B reappears as a new halo at z = 0; still counted
    assert kept.descendant.tolist() == [2, 2, 3, -1, -1]
    assert (kept.counts["flybys"], kept.counts["mergers"], kept.counts["new_halos"]) == (1, 1, 1)


@pytest.mark.parametrize("kept, fraction, linked", [(30, 0.5, True), (22, 0.5, False), (22, 0.4, True)])
def test_halo_losing_members(kept, fraction, linked):
    # a halo of 50 keeps `kept` members at z = 0, the others go back to the lattice: a descendant needs
    # at least `fraction` of 50
    group = tuple(range(200, 250))
    outs = [_output({group: C_A}, 1.0, 5), _output({group[:kept]: C_A}, 0.0, 6)]
    t = link_halos(outs, LinkConfig(min_shared_fraction=fraction))
    assert t.n_particles.tolist() == [50, kept]
    assert t.descendant.tolist() == ([1, -1] if linked else [-1, -1])
    assert t.counts["orphans"] == (0 if linked else 1)
    assert t.counts["new_halos"] == (0 if linked else 1)


def test_gap_of_one_output_is_bridged():
    group = tuple(range(300, 340))
    half = group[:15]  # 15 < min_particles: no halo at z = 1
    outs = [_output({group: C_A}, 2.0, 7), _output({half: C_A}, 1.0, 8), _output({group: C_B}, 0.0, 9)]
    t = link_halos(outs)
    assert t.counts["halos_per_output"] == [1, 0, 1]
    assert t.descendant.tolist() == [1, -1] and t.bridged.tolist() == [True, False]
    assert link_halos(outs, LinkConfig(skip_one_output=False)).descendant.tolist() == [-1, -1]


def _random_outputs(seed: int, n_part: int = 20000, n_out: int = 5, n_halos: int = 60):
    """Labels that evolve: halos merge at random and 15% of the particles change halo at every step."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(-1, n_halos, n_part)
    outs = []
    for i in range(n_out):
        # 20% of the halos merge into a random one
        merge = np.where(rng.random(n_halos) < 0.8, np.arange(n_halos), rng.integers(0, n_halos, n_halos))
        if i:
            lab = np.where(lab >= 0, merge[np.maximum(lab, 0)], -1)
            noisy = rng.random(n_part) < 0.15
            lab[noisy] = rng.integers(-1, n_halos, noisy.sum())
        sizes = np.bincount(lab[lab >= 0], minlength=n_halos)
        alive = np.flatnonzero(sizes > 0)
        order = alive[np.lexsort((alive, -sizes[alive]))]
        relabel = np.full(n_halos + 1, -1)
        relabel[order] = np.arange(order.size)
        halo_of_id = relabel[lab]
        cnt = sizes[order]
        cat = HaloCatalog(cnt * M_P, rng.uniform(0, BOX, (cnt.size, 3)), rng.normal(0, 100, (cnt.size, 3)), cnt,
                          BOX, M_P, 0.2, min_particles=1, a=1.0 / (1.0 + (n_out - 1 - i) * 0.5))
        outs.append(OutputHalos(cat, halo_of_id, rng.uniform(50, 150, cnt.size)))
    return outs


def test_links_equal_a_brute_force_count():
    # independent reference: for every halo, count its members' halos at the next output with a Counter
    outs = _random_outputs(3)
    for f in (0.2, 0.5):
        t = link_halos(outs, LinkConfig(min_shared_fraction=f, skip_one_output=False))
        off = t.offsets
        for i in range(len(outs) - 1):
            a, b = outs[i].halo_of_id, outs[i + 1].halo_of_id
            for h in range(outs[i].catalog.n_halos):
                c = Counter(b[(a == h) & (b >= 0)].tolist())
                best = min(c.items(), key=lambda kv: (-kv[1], kv[0])) if c else None
                want = off[i + 1] + best[0] if best and best[1] >= f * outs[i].catalog.n_particles[h] else -1
                assert t.descendant[off[i] + h] == want


def test_depth_first_bookkeeping_is_consistent():
    t = link_halos(_random_outputs(4))
    book = depth_first(t)
    dfs, last = book["depth_first"], book["last_progenitor"]
    assert np.array_equal(np.sort(dfs), np.arange(t.n_halos))  # a permutation
    # the subtree of a halo is the contiguous range dfs .. last, and its descendant's range contains it
    has = t.descendant >= 0
    d = t.descendant[has]
    assert np.all(dfs[d] < dfs[has]) and np.all(last[has] <= last[d])
    # a main progenitor is the first progenitor, right after its descendant
    mp = t.main_progenitor
    assert np.all(dfs[mp[mp >= 0]] == dfs[mp >= 0] + 1)
    assert np.all(last_major_merger(t) <= 1.0 / (1.0 + t.z[t.output]) + 1e-12)


def test_formation_redshift_of_a_known_history():
    # the main branch holds 30, 40, 100 particles at z = 2, 1, 0: half of 100 lies between z = 0 (100) and
    # z = 1 (40), linearly at z_f = (100 - 50) / (100 - 40) = 5/6
    group = tuple(range(100, 200))
    outs = [_output({group[:30]: C_A}, 2.0, 11), _output({group[:40]: C_A}, 1.0, 12), _output({group: C_A}, 0.0, 13)]
    t = link_halos(outs, LinkConfig(min_shared_fraction=0.9))
    _, m = main_branch_masses(t)
    assert np.allclose(m[0] / M_P, [30, 40, 100])
    z_f, censored, unresolved = formation_redshifts(t)
    assert z_f[0] == pytest.approx(5.0 / 6.0, rel=1e-12)  # exact arithmetic of the definition
    assert not censored[0] and not unresolved[0]
    assert progenitor_counts(t).tolist() == [[1, 1, 1]]
    # the merger case stays above half its mass back to z = 2: censored
    z_f, censored, _ = formation_redshifts(link_halos(_merger()))
    assert censored.tolist() == [True] and np.isnan(z_f[0])


def test_statistics_bins_and_matching():
    t = link_halos(_flyby())
    stats = tree_statistics(t, bin_edges_msun_h=[1e13, 5e13, 1e14])
    assert [b["n"] for b in stats.bins] == [1, 1]  # B (30) and A (60) at z = 0
    a, b = match_final_halos(_merger()[-1], _merger()[-1])
    assert a.tolist() == b.tolist() == [0]
    with pytest.raises(InputError, match="bin_edges"):
        tree_statistics(t, bin_edges_msun_h=[5.0, 1.0])


def test_bad_inputs_are_refused():
    outs = _merger()
    with pytest.raises(InputError, match="earliest first"):
        link_halos(outs[::-1])
    with pytest.raises(InputError, match="min_shared_fraction"):
        LinkConfig(min_shared_fraction=1.5)
    with pytest.raises(InputError, match=r"\.dat"):
        write_consistent_trees(link_halos(outs), "trees.txt", QUIJOTE_FIDUCIAL)


# -- the files, loaded with ytree itself -----------------------------------------------------------------

def _check_with_ytree(t, path):
    ytree = pytest.importorskip("ytree", reason="ytree reads the consistent-trees files (emu_backend[trees])")
    arbor = ytree.load(str(path))
    assert type(load_with_ytree(path)) is type(arbor)  # the package's helper is ytree's own loader
    roots = np.flatnonzero(t.descendant < 0)
    assert arbor.size == roots.size
    seen = []
    for tree in arbor:
        uid = tree["tree", "uid"].astype(np.int64)
        seen.append(uid)
        assert np.array_equal(tree["tree", "desc_uid"].astype(np.int64), t.descendant[uid])
        # masses (written with 7 significant digits), positions (1e-6 Mpc/h), velocities (1e-4 km/s), redshift
        assert np.allclose(tree["tree", "mass"].to("Msun/h").d, t.mass[uid], rtol=1e-6)
        for c, ax in enumerate("xyz"):
            assert np.allclose(tree["tree", f"position_{ax}"].to("Mpc/h").d, t.position[uid, c], atol=2e-6)
            assert np.allclose(tree["tree", f"velocity_{ax}"].to("km/s").d, t.velocity[uid, c], atol=2e-4)
        assert np.allclose(tree["tree", "redshift"], t.z[t.output[uid]], atol=1e-4)
        # ytree's main branch ("prog": its most massive ancestor at every step) is ours
        branch = [int(tree["uid"])]
        while t.main_progenitor[branch[-1]] >= 0:
            branch.append(int(t.main_progenitor[branch[-1]]))
        assert tree["prog", "uid"].astype(np.int64).tolist() == branch
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(t.n_halos))


@pytest.mark.parametrize("skip", [True, False])
def test_ytree_loads_the_constructed_trees(tmp_path, skip):
    t = link_halos(_flyby(), LinkConfig(skip_one_output=skip))  # with skip: a link from z = 2 to z = 0
    _check_with_ytree(t, write_consistent_trees(t, tmp_path / "tree_0_0_0.dat", QUIJOTE_FIDUCIAL))


def test_ytree_loads_a_random_forest(tmp_path):
    t = link_halos(_random_outputs(5), LinkConfig(min_shared_fraction=0.3))
    assert t.counts["mergers"] > 5 and t.counts["trees"] > 5  # the forest is not trivial
    _check_with_ytree(t, write_consistent_trees(t, tmp_path / "tree_0_0_0.dat", QUIJOTE_FIDUCIAL))
