//! Intermediate activations: every channel of a layer as a tile of a grid, and how sparse each
//! layer is (Chollet, *Deep Learning with Python*, 5.4.1).
//!
//! A channel is shown standardised on its own, `(x - mean) / std * 64 + 128` clipped to
//! `[0, 255]` (a constant channel stays blank, level 0), or on a scale shared by the whole
//! layer, then coloured through a [`Colormap`].

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};

use super::colormap::Colormap;
use crate::graph::Network;
use crate::{Error, Result};

/// Summary statistics of one channel's activation map.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ChannelStats {
    pub min: f32,
    pub max: f32,
    pub mean: f32,
    /// Population standard deviation (numpy's default).
    pub std: f32,
}

impl ChannelStats {
    /// The statistics of a slice of values (an empty slice gives zeros).
    pub fn of(values: &[f32]) -> Self {
        if values.is_empty() {
            return ChannelStats {
                min: 0.0,
                max: 0.0,
                mean: 0.0,
                std: 0.0,
            };
        }
        let n = values.len() as f64;
        let (mut min, mut max, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
        for &v in values {
            min = min.min(v);
            max = max.max(v);
            sum += f64::from(v);
        }
        let mean = sum / n;
        let var = values
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        ChannelStats {
            min,
            max,
            mean: mean as f32,
            std: var.sqrt() as f32,
        }
    }

    /// All values zero: the channel never fired for this image.
    pub fn is_blank(&self) -> bool {
        self.min == 0.0 && self.max == 0.0
    }
}

/// How sparse one layer's output is for one image.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerSparsity {
    /// The stage id, e.g. `blocks.4`.
    pub layer: String,
    /// Channels whose map is all zero, as a fraction of the layer's channels.
    pub blank_fraction: f32,
    /// Mean activation over all channels and positions.
    pub mean: f32,
    /// Values strictly above zero, as a fraction of all values.
    pub active_fraction: f32,
}

/// How channel tiles are laid out and coloured.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GridOptions {
    /// Tiles per row (16).
    pub cols: usize,
    /// Pixels between tiles (1), drawn white.
    pub gutter: u32,
    pub colormap: Colormap,
    /// Standardise with the whole layer's mean and std instead of each channel's own.
    pub shared_scale: bool,
}

impl GridOptions {
    /// Errors, naming the option and its allowed range, unless `cols` is 1 to 256 and `gutter`
    /// 0 to 16 pixels (the CLI, the desktop app and `reproduce` all call it).
    pub fn validate(&self) -> Result<()> {
        super::check_range("--cols", self.cols, 1..=256)?;
        super::check_range("gutter", self.gutter, 0..=16)?;
        Ok(())
    }
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            cols: 16,
            gutter: 1,
            colormap: Colormap::Viridis,
            shared_scale: false,
        }
    }
}

/// Where tiles sit in a grid image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridLayout {
    /// Number of tiles.
    pub count: usize,
    pub cols: usize,
    pub rows: usize,
    /// Tile width and height in pixels.
    pub tile: (u32, u32),
    pub gutter: u32,
}

impl GridLayout {
    /// `count` tiles of `tile` = `(w, h)` pixels, `cols` per row (fewer if there are fewer tiles).
    pub fn new(count: usize, cols: usize, tile: (u32, u32), gutter: u32) -> Self {
        let cols = cols.clamp(1, count.max(1));
        GridLayout {
            count,
            cols,
            rows: count.div_ceil(cols).max(1),
            tile,
            gutter,
        }
    }

    /// `(width, height)` of the whole grid image.
    pub fn size(&self) -> (u32, u32) {
        let span = |n: usize, t: u32| n as u32 * t + (n as u32).saturating_sub(1) * self.gutter;
        (span(self.cols, self.tile.0), span(self.rows, self.tile.1))
    }

    /// Top-left pixel of tile `i`.
    pub fn origin(&self, i: usize) -> (u32, u32) {
        let (r, c) = ((i / self.cols) as u32, (i % self.cols) as u32);
        (
            c * (self.tile.0 + self.gutter),
            r * (self.tile.1 + self.gutter),
        )
    }

    /// The tile under grid pixel `(x, y)`, or `None` on a gutter or past the last tile
    /// (the GUI's hover).
    pub fn tile_at(&self, x: u32, y: u32) -> Option<usize> {
        let (sx, sy) = (self.tile.0 + self.gutter, self.tile.1 + self.gutter);
        if x % sx >= self.tile.0 || y % sy >= self.tile.1 {
            return None;
        }
        let (c, r) = ((x / sx) as usize, (y / sy) as usize);
        let i = r * self.cols + c;
        (c < self.cols && i < self.count).then_some(i)
    }
}

/// The smallest side, pixels, at which a tile of an activation map is legible on screen.
pub const LEGIBLE_MIN: u32 = 80;
/// The largest side, pixels, a tile is given before zooming (bigger maps are shown smaller).
pub const LEGIBLE_MAX: u32 = 160;

/// The side, pixels, at which a map `side` pixels across is shown so that it can be read:
/// scaled up by the smallest integer that makes it at least [`LEGIBLE_MIN`] (a 7-pixel map
/// becomes 84, a 28-pixel one 84, a 112-pixel one stays 112), or divided by the smallest integer
/// that brings it to [`LEGIBLE_MAX`] or less (224 becomes 112). A grid of tiles this size scrolls
/// rather than shrinks.
pub fn legible_side(side: u32) -> u32 {
    let side = side.max(1);
    if side < LEGIBLE_MIN {
        side * LEGIBLE_MIN.div_ceil(side)
    } else {
        side / side.div_ceil(LEGIBLE_MAX)
    }
}

/// The side, pixels, of the tiles of `count` maps `side` pixels across in an area of `width` x
/// `height` with `gap` between tiles: the [`legible_side`], or a larger whole multiple of the
/// map's side (up to three times [`LEGIBLE_MAX`]) while the whole grid still fits the area, so
/// that a few channels fill the room instead of leaving it empty. Many channels keep the legible
/// side and scroll.
pub fn tile_side(side: u32, count: usize, width: f32, height: f32, gap: f32) -> u32 {
    let side = side.max(1);
    let mut best = legible_side(side);
    let fits = |t: u32| {
        let cols = columns_that_fit(width, t as f32, gap);
        count.div_ceil(cols) as f32 * (t as f32 + gap) - gap <= height
    };
    let mut m = best / side + 1;
    while side * m <= 3 * LEGIBLE_MAX && fits(side * m) {
        best = side * m;
        m += 1;
    }
    best
}

/// How many tiles `tile` wide with `gap` between them fit in `width` (at least one).
pub fn columns_that_fit(width: f32, tile: f32, gap: f32) -> usize {
    let cell = tile + gap;
    if cell.is_nan() || cell <= 0.0 {
        return 1;
    }
    ((width + gap) / cell).floor().max(1.0) as usize
}

/// One layer's output for one image, on the CPU: `channels` maps of `height` x `width`.
#[derive(Clone, Debug)]
pub struct LayerActivations {
    /// The stage id.
    pub layer: String,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// `[channels, height, width]`, row-major.
    pub data: Vec<f32>,
    /// Per-channel statistics (`channels` of them).
    pub stats: Vec<ChannelStats>,
}

impl LayerActivations {
    /// From a `[1, C, H, W]` or `[C, H, W]` tensor on any device.
    pub fn from_tensor(layer: &str, t: &Tensor) -> Result<Self> {
        let t = match t.rank() {
            4 if t.dim(0)? == 1 => t.squeeze(0)?,
            3 => t.clone(),
            _ => {
                return Err(Error::Model(format!(
                    "layer `{layer}` has no spatial output for one image (shape {:?})",
                    t.dims()
                )));
            }
        };
        let (channels, height, width) = t.dims3()?;
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let plane = height * width;
        let stats = data.chunks(plane.max(1)).map(ChannelStats::of).collect();
        Ok(LayerActivations {
            layer: layer.to_string(),
            channels,
            height,
            width,
            data,
            stats,
        })
    }

    /// Channel `c`'s map, `[height, width]` row-major.
    pub fn channel(&self, c: usize) -> &[f32] {
        let plane = self.height * self.width;
        &self.data[c * plane..][..plane]
    }

    /// Fraction of channels whose map is all zero.
    pub fn blank_fraction(&self) -> f32 {
        let blank = self.stats.iter().filter(|s| s.is_blank()).count();
        blank as f32 / self.channels.max(1) as f32
    }

    /// Mean activation over all channels and positions.
    pub fn mean(&self) -> f32 {
        (self.data.iter().map(|&v| f64::from(v)).sum::<f64>() / self.data.len().max(1) as f64)
            as f32
    }

    /// The layer's sparsity summary.
    pub fn sparsity(&self) -> LayerSparsity {
        let active = self.data.iter().filter(|&&v| v > 0.0).count();
        LayerSparsity {
            layer: self.layer.clone(),
            blank_fraction: self.blank_fraction(),
            mean: self.mean(),
            active_fraction: active as f32 / self.data.len().max(1) as f32,
        }
    }

    /// Statistics of the whole layer (the shared scale).
    pub fn layer_stats(&self) -> ChannelStats {
        ChannelStats::of(&self.data)
    }

    /// Channel `c` as display levels `[height, width]` in `0..=255`: standardised on its own
    /// (`shared = None`) or with the given layer statistics, `x64 + 128`, clipped, truncated.
    pub fn levels(&self, c: usize, shared: Option<&ChannelStats>) -> Vec<u8> {
        let own = self.stats[c];
        let s = shared.unwrap_or(&own);
        standardise(self.channel(c), s.mean, s.std)
    }

    /// The grid layout for these options (tiles at layer resolution).
    pub fn layout(&self, opts: &GridOptions) -> GridLayout {
        GridLayout::new(
            self.channels,
            opts.cols,
            (self.width as u32, self.height as u32),
            opts.gutter,
        )
    }

    /// Every channel as a tile, `opts.cols` per row, white gutters: an image of
    /// [`GridLayout::size`] pixels (one pixel per activation).
    pub fn grid(&self, opts: &GridOptions) -> RgbImage {
        let layout = self.layout(opts);
        let (w, h) = layout.size();
        let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
        let shared = opts.shared_scale.then(|| self.layer_stats());
        let table = opts.colormap.table();
        for c in 0..self.channels {
            let levels = self.levels(c, shared.as_ref());
            let (x0, y0) = layout.origin(c);
            for (i, &v) in levels.iter().enumerate() {
                let (x, y) = ((i % self.width) as u32, (i / self.width) as u32);
                img.put_pixel(x0 + x, y0 + y, Rgb(table[v as usize]));
            }
        }
        img
    }
}

/// `(x - mean) / std * 64 + 128`, clipped to `[0, 255]` and truncated (Chollet's recipe); a
/// constant input (`std == 0`) gives all zeros.
pub fn standardise(values: &[f32], mean: f32, std: f32) -> Vec<u8> {
    if std <= 0.0 || !std.is_finite() {
        return vec![0; values.len()];
    }
    values
        .iter()
        .map(|&v| ((v - mean) / std * 64.0 + 128.0).clamp(0.0, 255.0) as u8)
        .collect()
}

/// The output of `layer` for one preprocessed image `[1, 3, H, W]`. A layer without a spatial
/// output is an error naming the layers that have one.
pub fn layer_activations(net: &Network, input: &Tensor, layer: &str) -> Result<LayerActivations> {
    let out = net.forward_with_taps(input, &[layer])?.remove(0);
    if out.rank() != 4 {
        return Err(not_spatial(net, input, layer, out.dims()));
    }
    LayerActivations::from_tensor(layer, &out)
}

/// The ids of the stages whose output has a spatial shape (`[C, H, W]`) for an `input_size`
/// square input.
pub fn spatial_layers(net: &Network, input_size: usize) -> Vec<String> {
    net.layers(input_size)
        .into_iter()
        .filter(|l| l.output_shape.len() == 3)
        .map(|l| l.id)
        .collect()
}

pub(crate) fn not_spatial(net: &Network, input: &Tensor, layer: &str, dims: &[usize]) -> Error {
    let size = input.dims().last().copied().unwrap_or(224);
    Error::Model(format!(
        "layer `{layer}` has no spatial output (shape {dims:?}); layers with one: {}",
        spatial_layers(net, size).join(", ")
    ))
}

/// Blank-channel fraction and mean activation of every spatial layer, in execution order, for
/// one image `[1, 3, H, W]` (one forward pass): the claim "activations get sparser with
/// depth", measured.
pub fn sparsity_profile(net: &Network, input: &Tensor) -> Result<Vec<LayerSparsity>> {
    let size = input.dims().last().copied().unwrap_or(224);
    let layers = spatial_layers(net, size);
    let ids: Vec<&str> = layers.iter().map(String::as_str).collect();
    let taps = net.forward_with_taps(input, &ids)?;
    ids.iter()
        .zip(&taps)
        .map(|(id, t)| Ok(LayerActivations::from_tensor(id, t)?.sparsity()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acts(data: Vec<f32>, c: usize, h: usize, w: usize) -> LayerActivations {
        let t = Tensor::from_vec(data, (1, c, h, w), &Device::Cpu).unwrap();
        LayerActivations::from_tensor("x", &t).unwrap()
    }

    #[test]
    fn standardising_follows_the_recipe() {
        // mean 2, std 1: 1 -> 64, 2 -> 128, 3 -> 192; far values clip.
        assert_eq!(standardise(&[1.0, 2.0, 3.0], 2.0, 1.0), vec![64, 128, 192]);
        assert_eq!(standardise(&[-10.0, 10.0], 0.0, 1.0), vec![0, 255]);
        assert_eq!(standardise(&[5.0, 5.0], 5.0, 0.0), vec![0, 0]);
    }

    #[test]
    fn blank_channels_and_means_are_counted() {
        // Channel 0 all zero, channel 1 constant 2, channel 2 varies.
        let a = acts(
            vec![0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 0.0, 1.0, 2.0, 3.0],
            3,
            2,
            2,
        );
        assert!((a.blank_fraction() - 1.0 / 3.0).abs() < 1e-6);
        assert!((a.mean() - 14.0 / 12.0).abs() < 1e-6);
        assert_eq!(a.stats[2].min, 0.0);
        assert_eq!(a.stats[2].max, 3.0);
        assert!((a.stats[2].mean - 1.5).abs() < 1e-6);
        assert_eq!(a.levels(1, None), vec![0; 4], "constant stays blank");
        let s = a.sparsity();
        assert!((s.active_fraction - 7.0 / 12.0).abs() < 1e-6);
    }

    #[test]
    fn grid_has_gutters_and_tiles_in_order() {
        let a = acts((0..5 * 4).map(|v| v as f32).collect(), 5, 2, 2);
        let opts = GridOptions {
            cols: 3,
            ..GridOptions::default()
        };
        let img = a.grid(&opts);
        assert_eq!(img.dimensions(), (3 * 2 + 2, 2 * 2 + 1));
        // The gutter column and the empty sixth cell are white.
        assert_eq!(img.get_pixel(2, 0).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(7, 4).0, [255, 255, 255]);
        // Per-channel scale: every tile has the same pattern.
        assert_eq!(img.get_pixel(0, 0), img.get_pixel(3, 0));
        let layout = a.layout(&opts);
        assert_eq!(layout.tile_at(3, 1), Some(1));
        assert_eq!(layout.tile_at(2, 1), None);
        assert_eq!(layout.tile_at(4, 4), Some(4));
        assert_eq!(layout.tile_at(7, 4), None);
        // Shared scale: later channels are brighter.
        let shared = a.grid(&GridOptions {
            shared_scale: true,
            colormap: Colormap::Gray,
            ..opts
        });
        assert!(shared.get_pixel(0, 0).0[0] < shared.get_pixel(3, 0).0[0]);
    }

    #[test]
    fn tiles_are_scaled_to_a_legible_size_by_whole_factors() {
        // The stem's 112-pixel maps stay 1:1; the head's 7-pixel maps are scaled 12 times.
        assert_eq!(legible_side(112), 112);
        assert_eq!(legible_side(7), 84);
        assert_eq!(legible_side(28), 84);
        assert_eq!(legible_side(14), 84);
        assert_eq!(legible_side(56), 112);
        assert_eq!(legible_side(80), 80);
        assert_eq!(legible_side(224), 112);
        assert_eq!(legible_side(0), 80, "a degenerate map still gets a tile");
    }

    #[test]
    fn columns_fit_the_width_with_their_gaps() {
        // 4 tiles of 100 and 3 gaps of 10 need 430 pixels.
        assert_eq!(columns_that_fit(430.0, 100.0, 10.0), 4);
        assert_eq!(columns_that_fit(429.0, 100.0, 10.0), 3);
        assert_eq!(columns_that_fit(50.0, 100.0, 10.0), 1, "at least one");
        assert_eq!(columns_that_fit(500.0, 0.0, 0.0), 1);
    }

    #[test]
    fn a_few_channels_fill_the_room_by_whole_factors() {
        // 24 maps of 56 in 1300 x 900: 168-pixel tiles (3x) make 7 columns of 4 rows, 681
        // pixels high; 224 (4x) would need 5 columns of 5 rows, 1132 high.
        assert_eq!(tile_side(56, 24, 1300.0, 900.0, 3.0), 168);
        // 1,280 maps of 7 do not fit at any size: the legible side, and the grid scrolls.
        assert_eq!(tile_side(7, 1280, 1300.0, 900.0, 3.0), 84);
        // One map: as large as allowed, 3 x 160 = 480 at most, in whole multiples of 56.
        assert_eq!(tile_side(56, 1, 2000.0, 2000.0, 3.0), 448);
        // Too little room even for the legible side: still the legible side.
        assert_eq!(tile_side(28, 40, 100.0, 100.0, 3.0), 84);
    }
}
