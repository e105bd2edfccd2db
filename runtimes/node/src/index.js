'use strict';
/** Public API of the Model Foundry JavaScript runtime. */
const { ArtifactError, MicroModel, SUPPORTED_FORMAT_VERSIONS } = require('./runtime');
const { checkConformance } = require('./conformance');
const textspec = require('./textspec');

module.exports = { ArtifactError, MicroModel, SUPPORTED_FORMAT_VERSIONS, checkConformance, textspec };
