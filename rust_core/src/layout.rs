//! The shape and memory layout of a 4-D feature map.

/// Where the channel axis sits in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// NHWC: the channels of one pixel are contiguous.
    ChannelsLast,
    /// NCHW: the pixels of one channel are contiguous.
    ChannelsFirst,
}

/// The dimensions of a C-contiguous 4-D feature map in `layout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub layout: Layout,
}

impl Dims {
    /// Pixels per image, H * W.
    pub fn pixels(&self) -> usize {
        self.h * self.w
    }

    /// Elements per image, H * W * C.
    pub fn image_len(&self) -> usize {
        self.pixels() * self.c
    }

    /// Elements in the whole map.
    pub fn len(&self) -> usize {
        self.n * self.image_len()
    }

    /// Whether some dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An image seen as rows: `(rows, row_len)` = (pixels, C) for NHWC, (C, pixels) for NCHW.
    pub fn rows(&self) -> (usize, usize) {
        match self.layout {
            Layout::ChannelsLast => (self.pixels(), self.c),
            Layout::ChannelsFirst => (self.c, self.pixels()),
        }
    }
}
