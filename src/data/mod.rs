//! Image files to network inputs.
//!
//! [`preprocess`] decodes an image file to 8-bit RGB and turns it into the `[1, 3, crop, crop]`
//! float tensor a model expects, reproducing the PyTorch/Pillow reference pipeline bit for bit
//! (Pillow's fixed-point antialiased bilinear resize, Python rounding of sizes and crop offsets).

pub mod augment;
pub mod batch;
pub mod decode;
pub mod folder;
pub mod listing;
pub mod preprocess;
pub mod split_record;
pub mod train_transform;
