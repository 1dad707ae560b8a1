"""The hospital's DICOM network, headless: nodes, DIMSE calls (echo, store), and the storage SCP of `listen`."""
