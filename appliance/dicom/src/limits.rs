/// Caps applied before and during decode, so that a hostile or corrupt file
/// cannot make the appliance allocate without bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadLimits {
    /// Largest accepted file, bytes. 64 MiB by default.
    pub max_input_bytes: usize,
    /// Largest Rows and Columns. 8192 by default.
    pub max_dimension: u32,
    /// Most pixels (Rows x Columns) in one frame. 25 MP by default: the largest
    /// flat-panel detectors are about 4300 x 4300 (18.5 MP), and every decoded
    /// pixel costs about 10 bytes on the way to f32, so this keeps one study
    /// well under 512 MiB.
    pub max_pixels: u64,
    /// Most data elements (and sequence items) in the whole file. Real
    /// radiographs have a few thousand; each parsed element costs memory.
    pub max_elements: usize,
    /// Deepest sequence nesting.
    pub max_sequence_depth: usize,
    /// Longest text-valued element, bytes. Text is parsed into strings, so a
    /// huge multi-valued text element would multiply in memory.
    pub max_text_element_bytes: usize,
    /// Largest inflated data set for the deflate transfer syntax, bytes.
    pub max_inflated_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            max_input_bytes: 64 * 1024 * 1024,
            max_dimension: 8192,
            max_pixels: 25_000_000,
            max_elements: 100_000,
            max_sequence_depth: 16,
            max_text_element_bytes: 1024 * 1024,
            max_inflated_bytes: 128 * 1024 * 1024,
        }
    }
}
