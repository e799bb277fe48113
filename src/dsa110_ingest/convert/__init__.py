"""Conversion of complete groups to Measurement Sets: queue -> executor -> backend -> ms_index."""
