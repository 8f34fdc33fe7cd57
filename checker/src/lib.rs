//! Linearizability checker (Wing & Gong / Lowe, porcupine-style) with explanations; checker CLI.
