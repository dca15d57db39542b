"""Signal processing on audio and spectrograms: the spectrogram grid every job shares, denoising,
segment edges on the audio."""
