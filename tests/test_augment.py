"""Cubic-symmetry augmentation (emu_backend.training.augment): group, vector consistency, ZA equivariance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from emu_backend.errors import InputError
from emu_backend.ics.linear import displacement_from_density
from emu_backend.nn import lagrangian_to_eulerian
from emu_backend.training.augment import N_TRANSFORMS, TRANSFORMS, CubicTransform

RNG = np.random.default_rng(11)
FIELD = RNG.normal(size=(3, 4, 4, 4))


def _key(a):
    return a.round(12).tobytes()


def test_48_distinct_transforms():
    assert N_TRANSFORMS == 48 and TRANSFORMS[0].is_identity
    # a generic random field has no symmetry, so distinct group elements give distinct images
    assert len({_key(np.ascontiguousarray(g.apply_vector(FIELD))) for g in TRANSFORMS}) == 48
    assert len({g.matrix().tobytes() for g in TRANSFORMS}) == 48
    for g in TRANSFORMS:  # signed permutation matrices: orthogonal with determinant +-1
        m = g.matrix()
        assert np.array_equal(m @ m.T, np.eye(3, dtype=int)) and abs(round(np.linalg.det(m))) == 1


def test_group_closure_and_composition():
    field = RNG.normal(size=(3, 3, 4, 5))  # unequal axes catch axis mix-ups
    index = {(g.perm, g.flips): i for i, g in enumerate(TRANSFORMS)}
    for g1, g2 in itertools.product(TRANSFORMS, repeat=2):
        h = g2.compose(g1)
        assert (h.perm, h.flips) in index  # closure
        # exact: transposes, flips and sign changes only
        assert np.array_equal(g2.apply_vector(g1.apply_vector(field)), h.apply_vector(field))
        assert np.array_equal(h.matrix(), g2.matrix() @ g1.matrix())
    for g in TRANSFORMS:
        assert g.inverse().compose(g).is_identity and g.compose(g.inverse()).is_identity


def test_scalar_and_torch_agree_with_numpy():
    scalar = RNG.normal(size=(2, 3, 4, 5))
    for g in TRANSFORMS[::5]:
        assert np.array_equal(g.apply_scalar(torch.from_numpy(scalar)).numpy(), g.apply_scalar(scalar))
        assert np.array_equal(g.apply_vector(torch.from_numpy(FIELD)).numpy(), g.apply_vector(FIELD))


def test_bad_transform_arguments():
    with pytest.raises(InputError, match="permutation"):
        CubicTransform((0, 0, 1))
    with pytest.raises(InputError, match="vector fields"):
        TRANSFORMS[3].apply_vector(np.zeros((2, 4, 4, 4)))


@pytest.mark.parametrize("periodic", [False, True])
def test_painting_commutes_with_transforms(periodic):
    """Augmenting the displacement (and velocity) then painting = augmenting the painted meshes."""
    g = torch.Generator().manual_seed(2)
    n = 10
    dis = torch.randn(1, 3, n, n, n, generator=g, dtype=torch.float64) * 0.5
    vel = torch.randn(1, 3, n, n, n, generator=g, dtype=torch.float64)
    den, mom = (lagrangian_to_eulerian(dis, v, periodic=periodic)[0] for v in (None, vel))
    for t in TRANSFORMS:
        den_t, mom_t = (lagrangian_to_eulerian(t.apply_vector(dis), v, periodic=periodic)[0]
                        for v in (None, t.apply_vector(vel)))
        # positions n-1-p vs p differ by float64 round-off (~1e-15 cells) in the CIC weights
        torch.testing.assert_close(den_t, t.apply_scalar(den), rtol=0, atol=1e-12)
        torch.testing.assert_close(mom_t, t.apply_vector(mom), rtol=0, atol=1e-12)


def test_za_displacement_is_equivariant():
    """ZA displacement of a transformed density = transformed ZA displacement of the density."""
    n, box = 8, 15.625
    delta = RNG.normal(size=(n, n, n))
    psi = displacement_from_density(delta, box)
    scale = np.abs(psi).max()
    for t in TRANSFORMS:
        got = displacement_from_density(np.ascontiguousarray(t.apply_scalar(delta)), box)
        # float64 FFTs of permuted/reflected inputs: round-off ~1e-15 relative to the field's size
        np.testing.assert_allclose(got, t.apply_vector(psi), rtol=0, atol=1e-12 * scale)


def test_sampler_crops_are_transformed_plain_crops(tmp_path):
    """An augmented draw equals the transform applied to the un-augmented draw of the same stream."""
    from emu_backend.cosmology import QUIJOTE_FIDUCIAL
    from emu_backend.ics import InitialConditions
    from emu_backend.io.training_sample import TrainingSample, write_training_sample
    from emu_backend.simulator import simulate
    from emu_backend.training.dataset import CropSampler

    ics = InitialConditions.from_noise(8, None, QUIJOTE_FIDUCIAL, seed=1)
    snaps = simulate(ics, QUIJOTE_FIDUCIAL, z=[0.0, 0.5], backend="za")
    path = write_training_sample(tmp_path / "s.h5", TrainingSample(
        ics.displacement, [0.0, 0.5], np.stack([s.displacement_field() for s in snaps]),
        np.stack([s.velocity_field() for s in snaps]), ics.box_size, QUIJOTE_FIDUCIAL, seed=1))
    aug, plain = CropSampler([path], 8, seed=4, augment=True), CropSampler([path], 8, seed=4, augment=False)
    seen = set()
    for i in range(6):
        a, p = aug.draw(3, i), plain.draw(3, i)
        assert (a.origin, a.z) == (p.origin, p.z) and p.transform == 0
        t = TRANSFORMS[a.transform]
        seen.add(a.transform)
        for name in ("x", "dis", "vel"):  # exact: the same float32 values rearranged and sign-flipped
            assert np.array_equal(getattr(a, name), t.apply_vector(getattr(p, name))), name
    assert len(seen) > 1
    aug.close()
    plain.close()
