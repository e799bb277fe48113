"""The two databases: ``hdf5`` (inputs) and ``products`` (outputs). All SQL lives here."""
