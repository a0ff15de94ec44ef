import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data

from archlab import spectral


def _camera(size=128):
    """scikit-image's cameraman, block-averaged to ``size`` (a natural grey image in [0, 1])."""
    image = data.camera().astype(np.float64) / 255.0
    k = image.shape[0] // size
    return image.reshape(size, k, size, k).mean(axis=(1, 3))


def _tensor(array):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]


def _reference_fbc(output, target, bands):
    """Paper 000's reference FBC (get_circular_statastic), restated in NumPy for a grey image."""
    ratio = np.abs(np.fft.fftshift(np.fft.fft2(output))) / (np.abs(np.fft.fftshift(np.fft.fft2(target))) + 1e-8)
    ratio = np.clip(ratio, 0, 1)
    h, w = ratio.shape
    y, x = np.ogrid[:h, :w]
    dist = np.sqrt((x - w // 2) ** 2 + (y - h // 2) ** 2)
    inner = np.zeros((h, w), dtype=bool)
    means = []
    for fraction in np.linspace(1 / bands, 1, bands):
        disc = dist <= (w // 2) * fraction
        means.append(ratio[disc & ~inner].mean())
        inner = disc
    return np.array(means)


def _numpy_azimuthal_average(image):
    power = np.abs(np.fft.fftshift(np.fft.fft2(image))) ** 2 / image.size
    h, w = image.shape
    y, x = np.indices((h, w))
    radius = np.rint(np.hypot(y - h // 2, x - w // 2)).astype(int)
    keep = radius <= min(h, w) // 2
    sums = np.bincount(radius[keep], weights=power[keep])
    return sums / np.bincount(radius[keep])


def test_fbc_of_an_image_with_itself_is_one_in_every_band():
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(spectral.fbc(x, x), torch.ones(2, 5))


@pytest.mark.parametrize("size", [40, 64])  # at 40 px, 22 pixels lie exactly on a band edge
def test_fbc_matches_the_reference_code_of_paper_000(size):
    rng = np.random.default_rng(1)
    target = _camera(128)[:size, :size]
    output = np.clip(target + rng.normal(0, 0.2, target.shape), 0, 1)
    ours = spectral.fbc(_tensor(output), _tensor(target)).double().numpy()[0]
    np.testing.assert_allclose(ours, _reference_fbc(output, target, 5), rtol=1e-5)
    assert np.ptp(ours) > 0.05


def test_fbc_of_a_circular_gaussian_blur_is_the_band_mean_of_its_transfer_function():
    sigma = 1.5
    target = _camera(128)
    blurred = ndimage.gaussian_filter(target, sigma, mode="wrap", truncate=8.0)
    got = spectral.fbc(_tensor(blurred), _tensor(target)).double().numpy()[0]
    # continuous transfer function of a Gaussian of std sigma pixels: exp(-2 pi^2 sigma^2 rho^2)
    f = np.fft.fftshift(np.fft.fftfreq(128))
    rho = np.hypot(f[:, None], f[None, :])
    band = np.ceil(rho * 10 - 1e-9).clip(1, None) - 1
    expected = [np.exp(-2 * np.pi**2 * sigma**2 * rho[band == n] ** 2).mean() for n in range(5)]
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert np.all(np.diff(got) < 0) and got[0] > 0.8 and got[-1] < 0.01


def test_fbc_of_a_low_pass_image_falls_with_band_index():
    target = _camera(128)
    blurred = ndimage.gaussian_filter(target, 1.0)
    got = spectral.fbc(_tensor(blurred), _tensor(target))[0]
    assert torch.all(got[1:] < got[:-1])
    assert got[0] > 0.9 and got[-1] < 0.3


@pytest.mark.parametrize("shape", [(33, 33), (32, 47), (45, 30)])
def test_fbc_half_plane_equals_the_centred_full_plane_band_mean(shape):
    gen = torch.Generator().manual_seed(3)
    target = torch.rand(1, 3, *shape, generator=gen, dtype=torch.float64)
    output = (target + 0.3 * torch.randn(2, 3, *shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    ratio = spectral.centered_spectrum(output) / (spectral.centered_spectrum(target) + spectral.TARGET_EPS)
    bins = spectral.radial_bins(*shape, 4)
    full = torch.stack([ratio.clamp(0, 1)[:, bins == b].mean(1) for b in range(4)], dim=1)
    torch.testing.assert_close(spectral.fbc(output, target, 4), full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(spectral.FBC(target, 4)(output), full, rtol=1e-12, atol=1e-12)


def test_fbc_is_batched_and_broadcasts_one_target():
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(1, 3, 32, 32, generator=gen)
    outputs = (target + 0.3 * torch.randn(4, 3, 32, 32, generator=gen)).clamp(0, 1)
    batched = spectral.fbc(outputs, target)
    single = torch.cat([spectral.fbc(o[None], target) for o in outputs])
    assert batched.shape == (4, 5)
    torch.testing.assert_close(batched, single)
    torch.testing.assert_close(spectral.fbc(outputs, target.expand(4, -1, -1, -1)), batched)


def test_centered_spectrum_uses_bt601_luma_and_puts_dc_in_the_middle():
    rgb = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(3))
    grey = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    mag = spectral.centered_spectrum(rgb)
    assert mag.shape == (1, 16, 20)
    torch.testing.assert_close(mag, spectral.centered_spectrum(grey))
    torch.testing.assert_close(mag[0, 8, 10], grey.sum())


def test_radial_bins_split_the_nyquist_disc_into_equal_width_rings():
    bins = spectral.radial_bins(64, 64, 4)
    assert bins.dtype == torch.int64 and bins.shape == (64, 64)
    row = bins[32, 32:].tolist()  # along an axis: distance 0..31 pixels, edges at 8, 16, 24, 32
    assert row == [0] * 9 + [1] * 8 + [2] * 8 + [3] * 7
    assert bins[0, 0] == 4  # the corner lies beyond the Nyquist circle
    assert spectral.radial_bins(64, 64, 4) is bins  # cached
    wide = spectral.radial_bins(32, 64, 2)  # cycles per pixel on each axis: edges at rho 0.25 and 0.5
    assert wide[16, 32 + 16].item() == 0 and wide[16, 32 + 17].item() == 1 and wide[8, 32].item() == 0


def test_radial_psd_of_white_noise_is_flat_at_its_variance():
    sigma = 0.1
    noise = sigma * torch.randn(8, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    radius, psd = spectral.radial_psd(noise, bins=9)
    torch.testing.assert_close(radius, torch.linspace(0, 0.5, 9))
    curve = psd[:, 1:].mean(dim=0)
    assert torch.all((curve / sigma**2 - 1).abs() < 0.1)


def test_radial_psd_of_a_one_over_f_image_has_slope_minus_two():
    n = 128
    rng = np.random.default_rng(5)
    f = np.fft.fftfreq(n)
    rho = np.hypot(f[:, None], f[None, :])
    amplitude = np.divide(1.0, rho, out=np.zeros_like(rho), where=rho > 0)
    phase = np.exp(2j * np.pi * rng.random((4, n, n)))
    images = np.fft.ifft2(amplitude * phase).real
    radius, psd = spectral.radial_psd(torch.from_numpy(images).float()[:, None])
    keep = slice(4, None)
    slope = np.polyfit(np.log(radius[keep].numpy()), np.log(psd.mean(dim=0)[keep].numpy()), 1)[0]
    assert abs(slope + 2) < 0.1


def test_radial_psd_agrees_with_a_numpy_azimuthal_average():
    image = _camera(64)
    radius, psd = spectral.radial_psd(_tensor(image))
    np.testing.assert_allclose(psd[0].double().numpy(), _numpy_azimuthal_average(image), rtol=1e-4)
    np.testing.assert_allclose(radius.numpy(), np.arange(33) / 64)


def test_radial_psd_is_batched():
    images = torch.rand(3, 3, 32, 40, generator=torch.Generator().manual_seed(6))
    radius, psd = spectral.radial_psd(images, bins=6)
    assert psd.shape == (3, 6) and radius.shape == (6,)
    torch.testing.assert_close(psd, torch.cat([spectral.radial_psd(x[None], bins=6)[1] for x in images]))


def test_power_spectrum_error_of_a_scaled_image_is_the_squared_gain_minus_one():
    target = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(7))
    outputs = torch.cat([target, 0.5 * target, 1.2 * target])
    err = spectral.power_spectrum_error(outputs, target)
    expected = torch.tensor([0.0, 0.75, 0.44]).view(3, 1).expand(3, 5)
    torch.testing.assert_close(err, expected, atol=1e-4, rtol=1e-4)


def test_power_spectrum_error_grows_in_the_high_bands_with_added_noise():
    target = _tensor(_camera(64))
    noisy = target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(8))
    err = spectral.power_spectrum_error(noisy, target)[0]
    assert err[-1] > 10 * err[0]


def test_trajectory_distance_is_the_papers_sum_of_squared_errors():
    gen = torch.Generator().manual_seed(9)
    run_a = torch.rand(6, 3, 8, 8, generator=gen)
    run_b = run_a + 0.1 * torch.randn(6, 3, 8, 8, generator=gen)
    expected = ((run_a.numpy() - run_b.numpy()) ** 2).reshape(6, -1).sum(axis=1)
    np.testing.assert_allclose(spectral.trajectory_distance(run_a, run_b).numpy(), expected, rtol=1e-5)
    rms = spectral.trajectory_distance(list(run_a[:, None]), list(run_b[:, None]), reduction="rms")
    np.testing.assert_allclose(rms.numpy(), np.sqrt(expected / (3 * 8 * 8)), rtol=1e-5)
    assert torch.all(spectral.trajectory_distance(run_a, run_a.clone()) == 0)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: spectral.fbc(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8)), "output"),
        (lambda: spectral.fbc(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8)), "target"),
        (lambda: spectral.fbc(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), bands=5), "bands"),
        (lambda: spectral.radial_psd(torch.rand(1, 1, 8, 8), bins=1), "bins"),
        (lambda: spectral.radial_psd(torch.rand(8, 8)), "image"),
        (lambda: spectral.centered_spectrum(torch.zeros(1, 1, 8, 8, dtype=torch.uint8)), "x"),
        (lambda: spectral.trajectory_distance(torch.rand(2, 4), torch.rand(3, 4)), "run_b"),
        (lambda: spectral.trajectory_distance([torch.rand(4), torch.rand(5)], torch.rand(2, 4)), "run_a"),
        (lambda: spectral.trajectory_distance(torch.rand(2, 4), torch.rand(2, 4), reduction="mean"), "reduction"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_field(call, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        call()
