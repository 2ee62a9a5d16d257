"""PCA against the chapter's Figure 7.2 and against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA as SkPCA

from genlab.checks import ConfigError
from genlab.models.pca import PCA

FIGURE_7_2 = {  # point: (initial, encoded, decoded)
    "A": ((-0.50, -0.40), -0.63, (-0.54, -0.33)),
    "B": ((-0.40, -0.10), -0.39, (-0.34, -0.20)),
    "C": ((0.10, 0.00), 0.09, (0.07, 0.04)),
    "D": ((0.30, 0.30), 0.41, (0.35, 0.21)),
    "E": ((0.50, 0.20), 0.53, (0.46, 0.27)),
}


def test_reproduces_figure_7_2_to_two_decimals():
    x = torch.tensor([p[0] for p in FIGURE_7_2.values()])
    pca = PCA(data_shape=(2,), latent_dim=1).fit(x)
    # The chapter's points are centred already (mean 0); its table encodes without re-centring.
    assert torch.allclose(pca.mean.float(), torch.zeros(2), atol=1e-6)
    z = pca.encode(x).squeeze(1)
    sign = torch.sign(z[0]) * np.sign(FIGURE_7_2["A"][1])  # the component's sign is arbitrary
    expected_z = torch.tensor([p[1] for p in FIGURE_7_2.values()])
    expected_x = torch.tensor([p[2] for p in FIGURE_7_2.values()])
    assert torch.allclose((sign * z).round(decimals=2), expected_z, atol=1e-9)
    assert torch.allclose(pca.reconstruct(x).round(decimals=2), expected_x, atol=1e-9)


@pytest.mark.parametrize("m", [1, 5, 20])
def test_matches_sklearn_on_digits(m):
    x = load_digits().data.astype(np.float32) / 16.0
    ours = PCA(data_shape=(1, 8, 8), latent_dim=m).fit(torch.from_numpy(x).view(-1, 1, 8, 8))
    ref = SkPCA(n_components=m, svd_solver="full").fit(x)
    np.testing.assert_allclose(ours.explained_variance.numpy(), ref.explained_variance_, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours.explained_variance_ratio.numpy(), ref.explained_variance_ratio_, rtol=1e-5)
    xt = torch.from_numpy(x).double().view(-1, 1, 8, 8)
    ours_err = (ours.reconstruct(xt).flatten(1) - xt.flatten(1)).pow(2).sum(1).mean().item()
    ref_err = ((ref.inverse_transform(ref.transform(x.astype(np.float64))) - x) ** 2).sum(1).mean()
    assert ours_err == pytest.approx(ref_err, rel=1e-5)
    # Same subspace: |cos| between matching components is 1.
    cos = (ours.components.numpy() * ref.components_).sum(1)
    np.testing.assert_allclose(np.abs(cos), 1.0, atol=1e-5)


def test_rejects_latent_dim_above_data_dim():
    with pytest.raises(ConfigError, match=r"latent_dim=65 .*at most the data dimension 64"):
        PCA(data_shape=(1, 8, 8), latent_dim=65)
    with pytest.raises(ConfigError, match=r"latent_dim=0"):
        PCA(data_shape=(2,), latent_dim=0)
