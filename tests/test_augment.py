import pytest
import torch

from medxfer.augment import augment_batch, build_augment

FULL = dict(hflip=0.5, degrees=10, translate=0.05, scale=[0.9, 1.1], brightness=0.2, contrast=0.2, noise_std=0.02)
OFF = dict(hflip=0, vflip=0, degrees=0, translate=0, scale=[1, 1], brightness=0, contrast=0, noise_std=0, elastic=0)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_augment_keeps_shape_dtype_and_range(channels):
    torch.manual_seed(0)
    batch = torch.rand(8, channels, 32, 32)
    out = augment_batch(batch, build_augment(FULL))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, batch)


def test_each_image_gets_its_own_draw():
    torch.manual_seed(0)
    batch = torch.rand(1, 1, 32, 32).repeat(6, 1, 1, 1)
    out = augment_batch(batch, build_augment(FULL))
    assert len({tuple(img.flatten()[:50].tolist()) for img in out}) == 6


def test_seeded_augmentation_is_reproducible():
    batch = torch.rand(4, 1, 32, 32)
    torch.manual_seed(3)
    first = augment_batch(batch, build_augment(FULL))
    torch.manual_seed(3)
    assert torch.equal(first, augment_batch(batch, build_augment(FULL)))


def test_no_augmentation_is_identity():
    batch = torch.rand(4, 1, 16, 16)
    assert torch.equal(augment_batch(batch, build_augment(OFF)), batch)


def test_keys_left_out_take_the_schemas_defaults_as_in_a_config():
    from medxfer.sections import augment_entry

    assert build_augment({}).__dict__ == build_augment(dict(augment_entry({}))).__dict__
    assert build_augment({}).hflip == augment_entry({})["hflip"] > 0  # `{}` is the default augmentation, not none
    with pytest.raises(ValueError, match="augment.hflip"):
        build_augment({"hflip": 2})


def test_views_are_windows_at_the_images_own_scale():
    """A 32 px bright square in 128 px images stays 32 px wide in 64 px windows (a resize would halve it)."""
    torch.manual_seed(0)
    batch = torch.zeros(64, 1, 128, 128)
    batch[:, :, 48:80, 48:80] = 1.0
    out = augment_batch(batch, build_augment(OFF, out_size=64))
    assert out.shape == (64, 1, 64, 64)
    bright = out[:, 0] > 0.5
    rows, cols = bright.any(dim=2), bright.any(dim=1)
    whole = ~(rows[:, 0] | rows[:, -1] | cols[:, 0] | cols[:, -1]) & rows.any(dim=1)  # the square inside the window
    assert whole.sum() >= 8
    assert set(rows[whole].sum(dim=1).tolist()) <= {31, 32, 33} and set(cols[whole].sum(dim=1).tolist()) <= {31, 32, 33}
    assert len({tuple(r.nonzero()[0].tolist()) for r in rows[whole]}) > 1  # windows fall at different places
    assert torch.equal(augment_batch(batch, build_augment(OFF)), batch)  # no out_size: the whole image, untouched
    with pytest.raises(ValueError, match="views of 160 px are larger than the 128x128 px images"):
        augment_batch(batch, build_augment(OFF, out_size=160))


ELASTIC = OFF | dict(elastic=1.0, elastic_alpha=20.0, elastic_sigma=4.0)


def test_elastic_deformation_moves_pixels_smoothly():
    torch.manual_seed(0)
    batch = torch.zeros(4, 1, 32, 32)
    batch[:, :, 8:24:4, :] = 1.0  # horizontal stripes: a deformation bends them
    out = augment_batch(batch, build_augment(ELASTIC))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert (out - batch).abs().mean() > 0.02
    # a smooth warp, not noise: the mean intensity is about kept
    assert abs(out.mean() - batch.mean()) < 0.05


@pytest.mark.parametrize("key", ["hflip", "vflip", "elastic", "erase"])
def test_probability_zero_is_identity_and_one_is_not(key):
    torch.manual_seed(0)
    batch = torch.rand(4, 2, 16, 16)
    assert torch.equal(augment_batch(batch, build_augment(OFF | {key: 0.0})), batch)
    assert not torch.equal(augment_batch(batch, build_augment(OFF | {key: 1.0})), batch)


def test_vertical_flip_at_probability_one_flips():
    batch = torch.rand(3, 1, 8, 8)
    assert torch.equal(augment_batch(batch, build_augment(OFF | {"vflip": 1.0})), batch.flip(-2))


def test_data_set_augment_overrides_the_stage_keys():
    from medxfer.config import training_params, validate

    ct = {"format": "npz", "root": ".", "file": "x.npz", "augment": {"hflip": 0, "elastic": 0.3}}
    conf = validate(
        {"datasets": {"ct": ct}, "finetune": {"targets": ["ct"], "inits": ["scratch"], "augment": {"degrees": 5}}}
    )
    params = training_params(conf, "finetune", "ct")["augment"]
    assert params["hflip"] == 0 and params["elastic"] == 0.3 and params["degrees"] == 5
    assert params["noise_std"] == 0.02  # schema default of the stage, not reset by the override
    assert training_params(conf, "finetune")["augment"]["hflip"] == 0.5


def test_training_loader_keeps_labels_and_shapes():
    from medxfer.batches import prepare_batch, train_loader
    from medxfer.cache import Split

    images = torch.randint(0, 255, (10, 1, 16, 16), dtype=torch.uint8).numpy()
    labels = (torch.arange(10) % 2).numpy()
    split = Split(images, labels, labels.astype(str), labels.astype(str), labels.astype(str))
    loader = train_loader(split, torch.arange(10), 4, torch.Generator().manual_seed(0))
    augment, seen = build_augment(FULL | ELASTIC), []
    for batch, index in loader:
        assert batch.dtype == torch.uint8 and torch.equal(batch, torch.from_numpy(images[index.numpy()]))
        out = prepare_batch(batch, augment, torch.device("cpu"))
        assert out.dtype == torch.float32 and out.shape == batch.shape
        seen += index.tolist()
    assert sorted(seen) == list(range(10))  # every image once per epoch, its own target alongside


def test_elastic_matches_torchvision_elastic_for_the_same_field():
    from torchvision.transforms.v2 import functional as tvf

    torch.manual_seed(0)
    image = torch.rand(1, 2, 24, 24)
    augment = build_augment(ELASTIC)
    displacement = augment.elastic_displacement(1, 24, 24)
    assert displacement.abs().max() > 0
    grid = torch.nn.functional.affine_grid(torch.eye(2, 3)[None], [1, 1, 24, 24], align_corners=False)
    ours = torch.nn.functional.grid_sample(image, grid + displacement, mode="bilinear", align_corners=False)
    theirs = tvf.elastic(image, displacement, interpolation=tvf.InterpolationMode.BILINEAR)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_rotation_and_scale_follow_the_configured_ranges():
    torch.manual_seed(0)
    theta = build_augment({"degrees": 30, "scale": [0.8, 1.25], "translate": 0.1}).affine_theta(500)
    linear = theta[:, :, :2]
    scale = 1 / torch.linalg.det(linear).sqrt()  # theta is the inverse map: det = 1 / s^2
    angle = torch.rad2deg(torch.atan2(-linear[:, 0, 1], linear[:, 0, 0]))
    assert scale.min() >= 0.8 - 1e-4 and scale.max() <= 1.25 + 1e-4
    assert angle.abs().max() <= 30 + 1e-3 and angle.abs().max() > 25


def test_gaussian_blur_matches_torchvision():
    from torchvision.transforms.v2 import functional as tvf

    from medxfer.augment import gaussian_blur

    field = torch.rand(3, 2, 40, 40)
    theirs = tvf.gaussian_blur(field, kernel_size=[25, 25], sigma=[3.0, 3.0])  # 8 sigma + 1 = 25
    assert torch.allclose(gaussian_blur(field, 3.0), theirs, atol=1e-5)


def test_masks_move_with_their_images_and_draw_no_random_numbers_of_their_own():
    masks = torch.zeros(6, 32, 32, dtype=torch.bool)
    for i in range(6):
        masks[i, 4 + 3 * i : 12 + 3 * i, 6:14] = True  # a square in a different place in each image
    batch = masks.unsqueeze(1).float().repeat(1, 2, 1, 1)
    geometry = FULL | {"elastic": 1.0, "elastic_sigma": 3.0, "brightness": 0, "contrast": 0, "noise_std": 0}
    torch.manual_seed(5)
    out, moved = build_augment(geometry)(batch, masks)
    torch.manual_seed(5)
    assert torch.equal(build_augment(geometry)(batch), out)  # the same draws with or without masks
    assert not torch.equal(moved, masks)
    for image, mask in zip(out, moved, strict=True):  # nearest vs bilinear sampling may differ at the border only
        warped = image[0] > 0.5
        assert (warped & mask).sum() / (warped | mask).sum() > 0.8


def test_random_erasing_blacks_out_one_rectangle_of_the_drawn_size_and_clears_the_mask_under_it():
    """As v2.RandomErasing: a rectangle per image, its area a fraction of the image in erase_scale, its aspect ratio
    in [0.3, 3.3], filled with 0; a finding mask under it is cleared with it."""
    torch.manual_seed(0)
    n, side = 200, 64
    batch = torch.rand(n, 2, side, side) * 0.9 + 0.1  # no pixel is 0 before erasing
    masks = torch.ones(n, side, side, dtype=torch.bool)
    out, moved = build_augment(OFF | {"erase": 1.0, "erase_scale": [0.05, 0.2]})(batch, masks)
    black = (out == 0).all(dim=1)
    assert torch.equal(out[~black.unsqueeze(1).expand_as(out)], batch[~black.unsqueeze(1).expand_as(batch)])
    assert torch.equal(moved, ~black)
    rows, cols = black.any(dim=2).sum(dim=1).float(), black.any(dim=1).sum(dim=1).float()
    assert torch.equal(black.sum(dim=(1, 2)).float(), rows * cols)  # one filled rectangle, nothing else
    area = rows * cols / side**2
    assert area.min() >= 0.04 and area.max() <= 0.21  # the drawn fraction, up to rounding of the sides
    assert (rows / cols).min() >= 0.25 and (rows / cols).max() <= 4.0
    assert area.std() > 0.02 and len({(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}) > n // 2
    half = build_augment(OFF | {"erase": 0.5})(batch)
    share = (half == 0).all(dim=1).flatten(1).any(dim=1).float().mean()
    assert 0.35 < share < 0.65


def test_erasing_that_spares_findings_never_touches_one_and_draws_the_same_numbers_without_masks():
    """erase_findings off: each rectangle is the first of its tries that misses the finding (none when all of them
    hit it); without masks it is the first try, and the random numbers drawn are the same either way."""
    n, side = 200, 64
    batch = torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1
    masks = torch.zeros(n, side, side, dtype=torch.bool)
    for i in range(n):  # an 8x8 finding (1.6 % of the image), somewhere else in each image
        masks[i, (7 * i) % 56 : (7 * i) % 56 + 8, (11 * i) % 56 : (11 * i) % 56 + 8] = True
    masks[-10:] = True  # a finding over the whole image leaves no place to erase
    spare = build_augment(OFF | {"erase": 1.0, "erase_scale": [0.05, 0.2], "erase_findings": False})
    torch.manual_seed(1)
    out, moved = spare(batch, masks)
    next_draw = torch.rand(1)
    black = (out == 0).all(dim=1)
    assert not (black & masks).any() and torch.equal(moved, masks)
    assert not black[-10:].any() and black[:-10].flatten(1).any(dim=1).float().mean() > 0.9
    torch.manual_seed(1)
    first_tries = (spare(batch) == 0).all(dim=1)
    assert torch.equal(torch.rand(1), next_draw)
    missed = ~(first_tries & masks).flatten(1).any(dim=1)
    assert 0.1 < missed[:-10].float().mean() < 0.95  # the first try hits some findings and misses others
    assert torch.equal(black[missed], first_tries[missed])
    torch.manual_seed(1)
    covering = (build_augment(OFF | {"erase": 1.0, "erase_scale": [0.05, 0.2]})(batch, masks)[0] == 0).all(dim=1)
    assert (covering & masks)[:-10].flatten(1).any(dim=1).float().mean() > 0.1  # the default erases findings too
