//! What a labelled folder looks like through a model: the dataset map (pooled features
//! projected to 2-D) and suspect labels (out-of-fold probabilities of the given labels). Reads
//! the feature cache and the network, never the GUI.

pub mod dataset;
pub mod map;
pub mod neighbours;
pub mod pca;
pub mod suspects;
pub mod tsne;
