//! Image files to pixels: the one place where convlens opens and decodes an image.
//!
//! Every image read (prediction, training and evaluation folders, the figures, the desktop app's
//! thumbnails) goes through [`load_rgb`] (or [`probe`] for a header-only look), which refuses,
//! with an error naming the file and the cause:
//!
//! - anything that is not a regular file: a folder, a named pipe (FIFO), a socket or a device
//!   (opened without blocking, so a FIFO cannot hang the process);
//! - an image whose header claims more pixels than the [`DecodeLimits`] allow (100 megapixels by
//!   default, `--max-pixels` raises it), or whose decoded samples would take more than 4 bytes
//!   per allowed pixel (a 16-bit RGBA image counts 8 bytes per pixel), checked before anything
//!   is allocated;
//! - a JPEG that ends before its end-of-image marker (a file cut short): the decoder would
//!   silently fill the missing part with grey.
//!
//! The decoded samples become 8-bit RGB in place where the format allows it, so the peak memory
//! of a decode stays near the size of the decoded image.

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use image::metadata::Orientation;
use image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::{Error, Result};

/// The default pixel budget of one image: 100 megapixels (e.g. 10000 x 10000).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Decoded bytes allowed per pixel of the budget (8-bit RGBA; 16-bit or float images count more
/// bytes per pixel, so fewer of their pixels fit).
const BYTES_PER_BUDGET_PIXEL: u64 = 4;

/// How large an image convlens agrees to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecodeLimits {
    /// The most pixels (width x height) one image may have; at least 1.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl DecodeLimits {
    /// Limits allowing `max_pixels` pixels per image.
    pub fn new(max_pixels: u64) -> Result<Self> {
        let limits = DecodeLimits { max_pixels };
        limits.validate()?;
        Ok(limits)
    }

    /// Errors unless `max_pixels` is at least 1.
    pub fn validate(&self) -> Result<()> {
        if self.max_pixels == 0 {
            return Err(Error::Model(
                "--max-pixels must be at least 1 (the default is 100000000)".into(),
            ));
        }
        Ok(())
    }

    /// The most bytes the decoded samples of one image may take.
    pub fn max_bytes(&self) -> u64 {
        self.max_pixels.saturating_mul(BYTES_PER_BUDGET_PIXEL)
    }

    /// The same budget as the `image` crate's limits: no side longer than the pixel budget, and
    /// the decoder's allocations within [`DecodeLimits::max_bytes`].
    fn image_limits(&self) -> image::Limits {
        let side = u32::try_from(self.max_pixels).unwrap_or(u32::MAX);
        let mut limits = image::Limits::no_limits();
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(self.max_bytes());
        limits
    }

    /// Why an image of `width` x `height` whose decoded samples take `bytes` is refused, if it is.
    fn problem(&self, width: u32, height: u32, bytes: u64) -> Option<String> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > self.max_pixels {
            return Some(format!(
                "the image is {width}x{height} ({}), more than the {} allowed \
                 (raise the limit with --max-pixels {pixels} if the file is trusted)",
                megapixels(pixels),
                megapixels(self.max_pixels)
            ));
        }
        if bytes > self.max_bytes() {
            return Some(format!(
                "the image is {width}x{height} with wide samples: decoding it takes {} MB, \
                 more than the {} MB the pixel budget allows ({} at {BYTES_PER_BUDGET_PIXEL} \
                 bytes each; raise it with --max-pixels {} if the file is trusted)",
                bytes.div_ceil(1_000_000),
                self.max_bytes() / 1_000_000,
                megapixels(self.max_pixels),
                bytes.div_ceil(BYTES_PER_BUDGET_PIXEL)
            ));
        }
        None
    }
}

/// `12.3 megapixels`, or a pixel count when below one megapixel.
fn megapixels(pixels: u64) -> String {
    if pixels >= 1_000_000 {
        format!("{:.1} megapixels", pixels as f64 / 1e6)
    } else {
        format!("{pixels} pixels")
    }
}

/// The process-wide pixel budget used by [`load_rgb`] and [`probe`].
static PROCESS_MAX_PIXELS: AtomicU64 = AtomicU64::new(DEFAULT_MAX_PIXELS);

/// Sets the pixel budget of every later [`load_rgb`] and [`probe`] in this process (the CLI's
/// `--max-pixels`).
pub fn set_process_limits(limits: DecodeLimits) {
    PROCESS_MAX_PIXELS.store(limits.max_pixels, Ordering::Relaxed);
}

/// The pixel budget of [`load_rgb`] and [`probe`] ([`DEFAULT_MAX_PIXELS`] unless
/// [`set_process_limits`] changed it).
pub fn process_limits() -> DecodeLimits {
    DecodeLimits {
        max_pixels: PROCESS_MAX_PIXELS.load(Ordering::Relaxed),
    }
}

/// What a path is when it is not a regular file ("a named pipe (FIFO)", "a folder", ...), or
/// `None` for a regular file.
pub fn special_file_kind(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        return None;
    }
    if file_type.is_dir() {
        return Some("a folder");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return Some("a named pipe (FIFO)");
        }
        if file_type.is_socket() {
            return Some("a socket");
        }
        if file_type.is_char_device() {
            return Some("a character device");
        }
        if file_type.is_block_device() {
            return Some("a block device");
        }
    }
    Some("not a regular file")
}

/// The reason given for a special file, naming what it is.
pub fn special_file_reason(kind: &str) -> String {
    format!("{kind}, not a regular file: only image files are read")
}

/// Opens `path` for reading if it is a regular file (following symbolic links). On Linux the
/// file is opened without blocking and checked through the open handle, so a FIFO can neither
/// hang the open nor be swapped in between the check and the read.
fn open_regular(path: &Path) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Without a non-blocking open, check the type first (a FIFO would block in `open`).
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if let Some(kind) = special_file_kind(meta.file_type()) {
            return Err(Error::image(path, special_file_reason(kind)));
        }
    }
    let file = options.open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if let Some(kind) = special_file_kind(meta.file_type()) {
        return Err(Error::image(path, special_file_reason(kind)));
    }
    Ok(file)
}

/// The whole content of the regular file `path`.
fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Decodes the image file at `path` to 8-bit RGB within the process-wide [`DecodeLimits`]
/// ([`load_rgb_with`]).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    load_rgb_with(path, &process_limits())
}

/// Decodes the image file at `path` to 8-bit RGB, like `PIL.Image.open(path).convert("RGB")`.
///
/// The format is guessed from the content, not the extension (PNG, JPEG, GIF, BMP, TIFF, WebP).
/// Grayscale is replicated to three channels; alpha is dropped without compositing (as Pillow's
/// `convert("RGB")` does); 16-bit samples keep their high byte (Pillow's `RGB;16B` unpacking;
/// for 16-bit grayscale Pillow would clip instead, which is not reproduced). The EXIF
/// orientation, if any, is applied (Pillow's `open` would not). Every error names the file: a
/// missing or unreadable file gives [`Error::Io`]; a special file, an unknown format, an image
/// over `limits`, a corrupt or truncated image give [`Error::Image`].
pub fn load_rgb_with(path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let bytes = read_regular(path)?;
    decode_rgb(&bytes, limits).map_err(|reason| Error::image(path, reason))
}

/// Reads the header of the image file at `path` and checks it as [`load_rgb`] would (a regular
/// file, a known format, within the process-wide limits, not empty, a JPEG not cut short),
/// without decoding the pixels: its `(width, height)`.
pub fn probe(path: &Path) -> Result<(u32, u32)> {
    let bytes = read_regular(path)?;
    let limits = process_limits();
    let decoder = checked_decoder(&bytes, &limits).map_err(|reason| Error::image(path, reason))?;
    Ok(decoder.dimensions())
}

/// A decoder for `bytes` whose header passed every check: a recognised format, not empty,
/// within `limits`, and (for JPEG) not cut short.
fn checked_decoder<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> std::result::Result<impl ImageDecoder + 'a, String> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    let Some(format) = reader.format() else {
        return Err("not an image (unrecognised file format)".to_string());
    };
    if format == ImageFormat::Jpeg
        && let Some(problem) = jpeg_truncation(bytes)
    {
        return Err(problem.to_string());
    }
    // The header alone first (the `image` crate's default limits), so that an image over the
    // budget is refused with its size rather than with a decoder's allocation error.
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| e.to_string())?;
    if width == 0 || height == 0 {
        return Err(format!("empty image ({width}x{height} pixels)"));
    }
    if let Some(problem) = limits.problem(width, height, 0) {
        return Err(problem);
    }
    reader.limits(limits.image_limits());
    let decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => format!(
            "the image is {width}x{height}: decoding it needs more memory than the {} MB the \
             pixel budget allows ({e}; raise it with --max-pixels if the file is trusted)",
            limits.max_bytes() / 1_000_000
        ),
        other => other.to_string(),
    })?;
    if let Some(problem) = limits.problem(width, height, decoder.total_bytes()) {
        return Err(problem);
    }
    Ok(decoder)
}

/// Decodes an in-memory image file to RGB within `limits`; the error is the reason, without a
/// path.
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> std::result::Result<RgbImage, String> {
    let mut decoder = checked_decoder(bytes, limits)?;
    // A broken EXIF block is not worth failing the image for; real decoding errors surface below.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (width, height) = decoder.dimensions();
    let color = decoder.color_type();
    let rgb = if is_float(color) {
        // Rare (OpenEXR-like TIFFs): `image`'s own conversion, clamping to [0, 1].
        DynamicImage::from_decoder(decoder)
            .map_err(|e| e.to_string())?
            .into_rgb8()
    } else {
        let total = usize::try_from(decoder.total_bytes())
            .map_err(|_| "the image is too large for this machine".to_string())?;
        let mut samples = vec![0u8; total];
        decoder
            .read_image(&mut samples)
            .map_err(|e| e.to_string())?;
        let data = to_rgb_in_place(samples, color);
        RgbImage::from_raw(width, height, data)
            .ok_or_else(|| "the decoder returned a buffer of the wrong size".to_string())?
    };
    let mut img = DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// Whether `color` has float samples.
fn is_float(color: ColorType) -> bool {
    matches!(color, ColorType::Rgb32F | ColorType::Rgba32F)
}

/// `convert("RGB")` of decoded integer samples (native-endian for 16 bits): gray replicated,
/// alpha dropped, 16-bit samples to their high byte. Formats with at least 3 bytes per pixel are
/// converted front to back in the same buffer, narrower ones back to front after growing it, so
/// no second image-sized buffer is needed.
fn to_rgb_in_place(mut data: Vec<u8>, color: ColorType) -> Vec<u8> {
    let bpp = usize::from(color.bytes_per_pixel());
    let wide = color.bytes_per_pixel() / color.channel_count() == 2;
    let channels = usize::from(color.channel_count());
    let sample = |data: &[u8], px: usize, c: usize| -> u8 {
        if wide {
            let at = px * bpp + 2 * c;
            (u16::from_ne_bytes([data[at], data[at + 1]]) >> 8) as u8
        } else {
            data[px * bpp + c]
        }
    };
    let rgb_of = |data: &[u8], px: usize| -> [u8; 3] {
        if channels >= 3 {
            [
                sample(data, px, 0),
                sample(data, px, 1),
                sample(data, px, 2),
            ]
        } else {
            [sample(data, px, 0); 3]
        }
    };
    let n = data.len() / bpp;
    if bpp >= 3 {
        for px in 0..n {
            let rgb = rgb_of(&data, px);
            data[3 * px..3 * px + 3].copy_from_slice(&rgb);
        }
        data.truncate(3 * n);
        data.shrink_to_fit();
    } else {
        data.resize(3 * n, 0);
        for px in (0..n).rev() {
            let rgb = rgb_of(&data, px);
            data[3 * px..3 * px + 3].copy_from_slice(&rgb);
        }
    }
    data
}

/// Why a JPEG file is incomplete, if it is: it must end its last scan with the end-of-image
/// marker (`FF D9`). Walks the marker segments and the entropy-coded scans (skipping stuffed
/// `FF 00` bytes and restart markers); data after the end-of-image marker (camera trailers,
/// motion photos) is allowed. Files that do not start like a JPEG are left to the decoder.
pub fn jpeg_truncation(bytes: &[u8]) -> Option<&'static str> {
    const CUT: &str = "truncated JPEG: the file ends before its end-of-image marker \
                       (it was cut short, e.g. by an interrupted download or copy)";
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let len = bytes.len();
    let mut i = 2;
    loop {
        // Find the next marker (leniently, as the decoder does), skipping fill bytes.
        let Some(ff) = bytes[i..].iter().position(|&b| b == 0xFF) else {
            return Some(CUT);
        };
        i += ff;
        while i < len && bytes[i] == 0xFF {
            i += 1;
        }
        if i >= len {
            return Some(CUT);
        }
        let marker = bytes[i];
        i += 1;
        match marker {
            0xD9 => return None,
            // Markers without a length: stuffing, TEM, restarts.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        if i + 2 > len {
            return Some(CUT);
        }
        let segment = usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        if segment < 2 {
            return None; // malformed: the decoder reports it, or copes
        }
        i += segment;
        if i > len {
            return Some(CUT);
        }
        if marker == 0xDA {
            // Entropy-coded data runs to the next marker other than FF 00 and a restart.
            loop {
                let Some(ff) = bytes[i..].iter().position(|&b| b == 0xFF) else {
                    return Some(CUT);
                };
                let p = i + ff;
                match bytes.get(p + 1) {
                    None => return Some(CUT),
                    Some(0x00 | 0xD0..=0xD7) => i = p + 2,
                    Some(_) => {
                        i = p;
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_macros,
    reason = "tests print what they saw on failure"
)]
mod tests {
    use super::*;
    use image::{ImageBuffer, ImageEncoder, Luma, Rgb, Rgba};
    use std::io::Write;

    fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    fn png_bytes(w: u32, h: u32, color: image::ExtendedColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(data, w, h, color)
            .unwrap();
        out
    }

    #[test]
    fn complete_jpeg_decodes_and_a_cut_one_is_refused() {
        let bytes = jpeg_bytes(64, 48);
        let limits = DecodeLimits::default();
        assert_eq!(jpeg_truncation(&bytes), None);
        assert_eq!(decode_rgb(&bytes, &limits).unwrap().dimensions(), (64, 48));
        // Trailing data after the end-of-image marker is allowed.
        let mut trailer = bytes.clone();
        trailer.extend_from_slice(b"motion photo trailer");
        assert_eq!(jpeg_truncation(&trailer), None);
        for cut in [bytes.len() - 2, bytes.len() / 2, 200, 3] {
            let err = decode_rgb(&bytes[..cut], &limits).unwrap_err();
            assert!(err.contains("truncated JPEG"), "cut at {cut}: {err}");
        }
    }

    #[test]
    fn pixel_budget_is_checked_before_decoding() {
        let data = vec![0u8; 40 * 30 * 3];
        let bytes = png_bytes(40, 30, image::ExtendedColorType::Rgb8, &data);
        assert!(decode_rgb(&bytes, &DecodeLimits { max_pixels: 1200 }).is_ok());
        let err = decode_rgb(&bytes, &DecodeLimits { max_pixels: 1199 }).unwrap_err();
        assert!(
            err.contains("40x30") && err.contains("--max-pixels 1200"),
            "{err}"
        );
        // 16-bit RGBA counts 8 bytes per pixel: 1200 pixels need a budget of 2400.
        let wide = vec![0u8; 40 * 30 * 8];
        let bytes = png_bytes(40, 30, image::ExtendedColorType::Rgba16, &wide);
        let err = decode_rgb(&bytes, &DecodeLimits { max_pixels: 2399 }).unwrap_err();
        assert!(err.contains("--max-pixels 2400"), "{err}");
        assert!(decode_rgb(&bytes, &DecodeLimits { max_pixels: 2400 }).is_ok());
        assert!(DecodeLimits::new(0).is_err());
    }

    /// 16-bit samples as native-endian bytes.
    fn ne16(samples: &[u16]) -> Vec<u8> {
        samples.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn conversion_in_place_matches_pil_convert() {
        use image::ExtendedColorType as E;
        let limits = DecodeLimits::default();
        let cases: Vec<(E, Vec<u8>, [u8; 3])> = vec![
            (E::L8, vec![10, 20], [10, 10, 10]),
            (E::La8, vec![10, 99, 20, 99], [10, 10, 10]),
            (E::Rgba8, vec![1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3]),
            // 16-bit samples (native-endian for the encoder) keep their high byte.
            (E::L16, ne16(&[0xAB01, 0xCD02]), [0xAB, 0xAB, 0xAB]),
            (
                E::Rgb16,
                ne16(&[0x11FF, 0x2280, 0x3301, 0x4400, 0x5500, 0x6600]),
                [0x11, 0x22, 0x33],
            ),
            (E::La16, ne16(&[0x80FF, 0x1234, 0, 0]), [0x80, 0x80, 0x80]),
        ];
        for (color, data, first) in cases {
            let img = decode_rgb(&png_bytes(2, 1, color, &data), &limits).unwrap();
            assert_eq!(img.get_pixel(0, 0).0, first, "{color:?}");
        }
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_rgb(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a folder"), "{err}");
        #[cfg(target_os = "linux")]
        {
            let fifo = dir.path().join("pipe.png");
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let err = load_rgb(&fifo).unwrap_err().to_string();
            assert!(err.contains("pipe.png") && err.contains("FIFO"), "{err}");
            assert!(probe(&fifo).is_err());
        }
        let file = dir.path().join("ok.png");
        let mut f = File::create(&file).unwrap();
        f.write_all(&png_bytes(3, 2, image::ExtendedColorType::Rgb8, &[7; 18]))
            .unwrap();
        assert_eq!(probe(&file).unwrap(), (3, 2));
    }

    #[test]
    fn grayscale_and_rgba_png_become_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let gray_path = dir.path().join("gray.png");
        ImageBuffer::from_fn(5, 4, |x, y| Luma([(x * 40 + y) as u8]))
            .save(&gray_path)
            .unwrap();
        let gray = load_rgb(&gray_path).unwrap();
        assert_eq!(gray.dimensions(), (5, 4));
        assert_eq!(gray.get_pixel(3, 2), &Rgb([122, 122, 122]));

        let rgba_path = dir.path().join("rgba.png");
        ImageBuffer::from_fn(5, 4, |x, _| Rgba([10, 20, 30, (x * 60) as u8]))
            .save(&rgba_path)
            .unwrap();
        let rgba = load_rgb(&rgba_path).unwrap();
        // Alpha dropped, not composited: colour unchanged even where fully transparent.
        assert!(rgba.pixels().all(|p| p.0 == [10, 20, 30]));

        // 16-bit RGB keeps the high byte like Pillow (0x80FF -> 0x80, not rounded to 0x81).
        let rgb16_path = dir.path().join("rgb16.png");
        ImageBuffer::from_pixel(2, 2, Rgb([0x80FFu16, 0xFFFF, 0x00FF]))
            .save(&rgb16_path)
            .unwrap();
        assert!(
            load_rgb(&rgb16_path)
                .unwrap()
                .pixels()
                .all(|p| p.0 == [0x80, 0xFF, 0])
        );
    }

    #[test]
    fn format_comes_from_content_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actually_a_png.jpg");
        RgbImage::from_pixel(3, 2, Rgb([1, 2, 3]))
            .save_with_format(&path, image::ImageFormat::Png)
            .unwrap();
        assert_eq!(
            load_rgb(&path).unwrap(),
            RgbImage::from_pixel(3, 2, Rgb([1, 2, 3]))
        );
    }

    /// A minimal big-endian TIFF/EXIF block with one entry: Orientation (0x0112) = `value`.
    fn exif_orientation_block(value: u16) -> Vec<u8> {
        let mut b = b"MM\0\x2a".to_vec();
        b.extend_from_slice(&8u32.to_be_bytes()); // IFD0 offset
        b.extend_from_slice(&1u16.to_be_bytes()); // one entry
        b.extend_from_slice(&0x0112u16.to_be_bytes()); // tag
        b.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        b.extend_from_slice(&1u32.to_be_bytes()); // count
        b.extend_from_slice(&value.to_be_bytes());
        b.extend_from_slice(&[0, 0]); // padding of the value field
        b.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        b
    }

    #[test]
    fn jpeg_exif_orientation_is_applied() {
        // 32x16: left half red, right half blue. Orientation 6 = rotate 90 degrees clockwise,
        // so the upright image is 16x32 with red on top.
        let img = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let mut bytes = Vec::new();
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
        enc.set_exif_metadata(exif_orientation_block(6)).unwrap();
        enc.write_image(img.as_raw(), 32, 16, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert!(
            bytes.windows(6).any(|w| w == b"Exif\0\0"),
            "no APP1 Exif segment written"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rotated.jpg");
        std::fs::write(&path, &bytes).unwrap();
        let loaded = load_rgb(&path).unwrap();
        assert_eq!(loaded.dimensions(), (16, 32));
        let top = loaded.get_pixel(8, 4).0;
        let bottom = loaded.get_pixel(8, 28).0;
        assert!(top[0] > 200 && top[2] < 60, "top should be red: {top:?}");
        assert!(
            bottom[2] > 200 && bottom[0] < 60,
            "bottom should be blue: {bottom:?}"
        );
    }

    fn assert_image_error_names(err: Error, path: &Path) {
        let msg = err.to_string();
        assert!(
            matches!(err, Error::Image { .. }),
            "expected Error::Image, got {err:?}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn truncated_and_fake_images_are_image_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let png = png_bytes(64, 48, image::ExtendedColorType::Rgb8, &[90; 64 * 48 * 3]);
        let truncated = dir.path().join("truncated.png");
        std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
        let err = load_rgb(&truncated).unwrap_err();
        eprintln!("truncated: {err}");
        assert_image_error_names(err, &truncated);

        let text = dir.path().join("notes.png");
        std::fs::write(&text, "this is not an image\n").unwrap();
        let err = load_rgb(&text).unwrap_err();
        eprintln!("text: {err}");
        assert_image_error_names(err, &text);

        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        assert_image_error_names(load_rgb(&empty).unwrap_err(), &empty);
    }
}
