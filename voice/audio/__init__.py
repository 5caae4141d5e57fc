"""Audio in and out: files, resampling, microphone and speaker, voice activity detection."""
