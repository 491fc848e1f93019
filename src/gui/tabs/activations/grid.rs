//! One activation grid on screen: tiles of a legible size in as many columns as the width
//! holds (or as the user chose), in a scroll area; ctrl+wheel zooms about the cursor, a drag
//! pans, hovering a tile shows its channel and statistics, a click picks it.

use egui::{Rect, Sense, Vec2, pos2, vec2};

use crate::jobs::views::ActivationView;
use crate::viz::activations::{columns_that_fit, tile_side};

/// Pixels between tiles at zoom 1.
const GAP: f32 = 3.0;
/// The zoom range.
const ZOOM: std::ops::RangeInclusive<f32> = 0.25..=8.0;

/// A grid's view state: zoom and scroll, and the texture of the grid on show.
pub struct GridState {
    zoom: f32,
    /// The scroll offset last frame and where the viewport was on screen.
    offset: Vec2,
    viewport: Rect,
    /// An offset to set on the next frame (after a zoom or a drag).
    pending: Option<Vec2>,
    texture: Option<egui::TextureHandle>,
}

impl Default for GridState {
    fn default() -> Self {
        GridState {
            zoom: 1.0,
            offset: Vec2::ZERO,
            viewport: Rect::NOTHING,
            pending: None,
            texture: None,
        }
    }
}

/// What happened in a grid this frame.
pub struct GridOutput {
    /// The tile clicked.
    pub clicked: Option<usize>,
    /// The columns shown.
    pub cols: usize,
}

/// The scroll offset that keeps the content point under `cursor` (relative to the viewport's
/// top-left corner) where it is on screen when the zoom goes from `from` to `to`: content
/// scales by `to / from` about the content origin.
pub fn zoom_about(offset: Vec2, cursor: Vec2, from: f32, to: f32) -> Vec2 {
    (offset + cursor) * (to / from) - cursor
}

/// A tile's on-screen size at zoom 1 for `count` maps of `width` x `height` in an area of
/// `room`: the longer side as [`tile_side`] gives it, the other scaled alike.
pub fn tile_size(width: u32, height: u32, count: usize, room: Vec2) -> Vec2 {
    let side = width.max(height).max(1);
    let scale = tile_side(side, count, room.x, room.y, GAP) as f32 / side as f32;
    vec2(width as f32 * scale, height as f32 * scale)
}

impl GridState {
    /// A new grid arrived: a new texture, and back to zoom 1 at the top left unless it has
    /// the same tiles (`same`).
    pub fn new_grid(&mut self, same: bool) {
        self.texture = None;
        if !same {
            *self = GridState::default();
        }
    }

    /// The zoom factor.
    pub fn zoom(&self) -> f32 {
        self.zoom
    }

    /// Draws `view`'s tiles into `size`: `cols` per row, or as many as fit at zoom 1.
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        id: &str,
        view: &ActivationView,
        cols: Option<usize>,
        size: Vec2,
    ) -> GridOutput {
        let count = view.stats.len();
        let (tw, th) = view.layout.tile;
        // Room for the tiles: less the scroll bar.
        let room = size - vec2(16.0, 0.0);
        let base = tile_size(tw, th, count, room);
        let cols = cols
            .unwrap_or_else(|| columns_that_fit(room.x, base.x, GAP))
            .clamp(1, count.max(1));
        self.take_zoom(ui);
        let (tile, gap) = (base * self.zoom, GAP * self.zoom);
        let rows = count.div_ceil(cols);
        let content = vec2(
            cols as f32 * (tile.x + gap) - gap,
            rows as f32 * (tile.y + gap) - gap,
        );
        let texture = self
            .texture
            .get_or_insert_with(|| {
                crate::gui::widgets::texture(ui.ctx(), &format!("{id}-grid"), &view.grid)
            })
            .clone();
        let mut area = egui::ScrollArea::both()
            .id_salt(id)
            .max_width(size.x)
            .max_height(size.y)
            .auto_shrink([false, false]);
        if let Some(offset) = self.pending.take() {
            area = area.scroll_offset(offset);
        }
        let mut clicked = None;
        let mut drag = Vec2::ZERO;
        let out = area.show(ui, |ui| {
            let (rect, background) = ui.allocate_exact_size(content, Sense::click_and_drag());
            drag += background.drag_delta();
            let (gw, gh) = view.layout.size();
            let atlas = vec2(gw.max(1) as f32, gh.max(1) as f32);
            for (i, stats) in view.stats.iter().enumerate() {
                let (r, c) = ((i / cols) as f32, (i % cols) as f32);
                let min = rect.min + vec2(c * (tile.x + gap), r * (tile.y + gap));
                let cell = Rect::from_min_size(min, tile);
                let response = ui.interact(
                    cell,
                    ui.make_persistent_id((id, i)),
                    Sense::click_and_drag(),
                );
                response.widget_info(|| {
                    egui::WidgetInfo::labeled(egui::Role::Image, true, format!("channel {i}"))
                });
                if ui.is_rect_visible(cell) {
                    let (x, y) = view.layout.origin(i);
                    let uv = Rect::from_min_size(
                        pos2(x as f32 / atlas.x, y as f32 / atlas.y),
                        vec2(tw as f32 / atlas.x, th as f32 / atlas.y),
                    );
                    ui.painter()
                        .image(texture.id(), cell, uv, egui::Color32::WHITE);
                }
                drag += response.drag_delta();
                if response.clicked() {
                    clicked = Some(i);
                }
                response.on_hover_ui(|ui| {
                    ui.label(if stats.is_blank() {
                        format!("channel {i}\nblank: all zero for this image")
                    } else {
                        format!(
                            "channel {i}\nmin {:.3}  max {:.3}  mean {:.3}",
                            stats.min, stats.max, stats.mean
                        )
                    });
                });
            }
        });
        self.offset = out.state.clamped_offset();
        self.viewport = out.inner_rect;
        if drag != Vec2::ZERO {
            self.pending = Some(self.offset - drag);
            ui.ctx().request_repaint();
        }
        GridOutput { clicked, cols }
    }

    /// Ctrl+wheel (or a pinch) over the grid zooms about the cursor.
    fn take_zoom(&mut self, ui: &egui::Ui) {
        let Some(pointer) = ui.input(|i| i.pointer.hover_pos()) else {
            return;
        };
        if !self.viewport.contains(pointer) {
            return;
        }
        let factor = ui.input(|i| i.zoom_delta());
        if factor == 1.0 {
            return;
        }
        let to = (self.zoom * factor).clamp(*ZOOM.start(), *ZOOM.end());
        let base = self.pending.unwrap_or(self.offset);
        let offset = zoom_about(base, pointer - self.viewport.min, self.zoom, to);
        self.pending = Some(offset.max(Vec2::ZERO));
        self.zoom = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zooming_keeps_the_point_under_the_cursor() {
        // Scrolled to (100, 40), the cursor at (30, 20) in the viewport: content point
        // (130, 60). At twice the zoom it lies at (260, 120); the new offset puts it back
        // under the cursor.
        let offset = zoom_about(vec2(100.0, 40.0), vec2(30.0, 20.0), 1.0, 2.0);
        assert_eq!(offset, vec2(230.0, 100.0));
        assert_eq!(offset + vec2(30.0, 20.0), vec2(260.0, 120.0));
        // Zooming back out returns to the start.
        let back = zoom_about(offset, vec2(30.0, 20.0), 2.0, 1.0);
        assert_eq!(back, vec2(100.0, 40.0));
        // Zooming at the viewport's corner, unscrolled, stays unscrolled.
        assert_eq!(zoom_about(Vec2::ZERO, Vec2::ZERO, 1.0, 3.0), Vec2::ZERO);
    }

    #[test]
    fn tiles_keep_their_aspect() {
        let room = vec2(400.0, 300.0);
        assert_eq!(tile_size(7, 7, 1280, room), vec2(84.0, 84.0));
        assert_eq!(tile_size(14, 7, 1280, room), vec2(84.0, 42.0));
        assert_eq!(tile_size(112, 112, 32, room), vec2(112.0, 112.0));
    }
}
