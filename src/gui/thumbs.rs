//! Thumbnails decoded by the worker and kept as textures, shared by the tabs that list images.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::widgets;

/// The textures of the thumbnails decoded so far.
#[derive(Default)]
pub struct Thumbnails {
    textures: HashMap<PathBuf, egui::TextureHandle>,
    asked: HashSet<PathBuf>,
}

/// The longest side of a thumbnail, pixels.
pub const THUMBNAIL_SIZE: u32 = 96;

impl Thumbnails {
    /// The thumbnail of `path`, once decoded.
    pub fn get(&self, path: &Path) -> Option<&egui::TextureHandle> {
        self.textures.get(path)
    }

    /// Of `paths`, those not asked for yet (now marked as asked).
    pub fn not_asked(&mut self, paths: Vec<PathBuf>) -> Vec<PathBuf> {
        paths
            .into_iter()
            .filter(|p| self.asked.insert(p.clone()))
            .collect()
    }

    /// Forgets the asks not answered (their job ended early), so they are asked again.
    pub fn forget_unanswered(&mut self) {
        let textures = &self.textures;
        self.asked.retain(|p| textures.contains_key(p));
    }

    /// Stores a decoded thumbnail (a dark red square for a file that cannot be read).
    pub fn insert(&mut self, ctx: &egui::Context, path: PathBuf, img: Option<RgbImage>) {
        let img = img.unwrap_or_else(|| RgbImage::from_pixel(8, 8, image::Rgb([90, 30, 30])));
        let tex = widgets::photo_texture(ctx, &path.to_string_lossy(), &img);
        self.textures.insert(path, tex);
    }
}
